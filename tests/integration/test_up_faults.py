"""`qraft up` under faults of its surroundings: the embedded NATS server's port taken by another
program, a state file that cannot be written, the API's port taken, a NATS URL holding a password.
`up` says what is wrong in one line (the port, the file, the key) and never prints the password."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qraft_core.bus.embedded import EmbeddedNats, EmbeddedNatsError, free_port, process_alive

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def occupy(port: int) -> socket.socket:
    """Another program's server on 127.0.0.1:port (connections are queued, never served)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.listen(16)
    return sock


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    with occupy(port) as sock:
        yield sock


@contextmanager
def qraft_up(tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    (config / "sources.yaml").write_text("sources: []\n")
    output = tmp_path / "up.out"
    environ = {**os.environ, "QRAFT_DATA_DIR": str(tmp_path / "data"), "QRAFT_LANDER_METRICS_PORT": "0", **(env or {})}
    if "QRAFT_NATS_URL" not in (env or {}):
        environ.pop("QRAFT_NATS_URL", None)
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "qraft_cli", "--config-dir", str(config), "up", *options],
                                   env=environ, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, output
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_a_revival_refused_by_a_taken_port_is_reported_and_retried_until_the_port_is_free(tmp_path):
    state = tmp_path / "data" / "nats" / "server.json"
    with qraft_up(tmp_path, "--no-ui", "--no-sources") as (process, output):
        assert _wait_for(lambda: state.exists() and b"NATS nats://" in output.read_bytes()), output.read_text()
        first = json.loads(state.read_text())
        os.kill(first["pid"], signal.SIGKILL)
        taken = None
        for _ in range(500):  # the port is free once the kernel has closed the dead server's socket
            try:
                taken = occupy(first["port"])
                break
            except OSError:
                time.sleep(0.002)
        assert taken is not None
        clash = (f"could not restart the embedded nats-server: port {first['port']} on 127.0.0.1 is taken by another "
                 f"program, so nats-server cannot listen on it; stop that program (see {state.parent / 'nats-server.log'})")
        try:
            assert _wait_for(lambda: output.read_text().count(clash) >= 2), output.read_text()
            assert process.poll() is None
        finally:
            taken.close()
        # Once the port is free the server comes back on it, started by `up` or by the lander's watchdog.
        assert _wait_for(lambda: state.exists() and json.loads(state.read_text())["pid"] != first["pid"]
                         and process_alive(json.loads(state.read_text())["pid"]))
        assert json.loads(state.read_text())["port"] == first["port"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = output.read_text()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    # Never taken for a server started here: no "restarted it" while the other program held the port.
    assert "restarted it at" not in text[: text.rindex(clash)]


def test_a_state_file_that_cannot_be_written_is_an_error_naming_it_and_leaves_no_server(tmp_path, monkeypatch):
    server = EmbeddedNats(directory=tmp_path)
    original = Path.write_text

    def full_disk(path: Path, text: str, *args: object, **kwargs: object) -> int:
        if path.name == "server.json":
            raise OSError(28, "No space left on device")  # a failed write names no file
        return original(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(EmbeddedNatsError) as caught:
        server.start()
    assert str(caught.value) == f"{tmp_path / 'server.json'}: cannot be written (No space left on device)"
    assert server.process is not None and server.process.poll() is not None  # stopped: its port is free again
    assert EmbeddedNats.running(tmp_path) is None


def test_a_port_answered_by_another_program_is_not_taken_for_a_started_server(tmp_path):
    port = free_port()
    with listening(port), pytest.raises(EmbeddedNatsError) as caught:
        EmbeddedNats(directory=tmp_path, port=port).start()
    assert str(caught.value) == (f"port {port} on 127.0.0.1 is taken by another program, so nats-server cannot "
                                 f"listen on it; stop that program (see {tmp_path / 'nats-server.log'})")
    assert not (tmp_path / "server.json").exists()


def test_the_api_port_taken_stops_up_with_one_line_naming_the_port_and_its_key(tmp_path):
    api_port, dagster_port = free_port(), free_port()
    env = {"QRAFT_API_PORT": str(api_port), "QRAFT_DAGSTER_PORT": str(dagster_port)}
    with listening(api_port), qraft_up(tmp_path, "--no-sources", env=env) as (process, output):
        process.wait(timeout=120)
    text = output.read_text()
    assert process.returncode == 2, text
    assert text.splitlines()[-1] == (
        f"error: {tmp_path / 'config' / 'qraft.yaml'}: api.port: port {api_port} on 127.0.0.1 cannot be listened on "
        "(Address already in use); stop the program holding it or choose another port")
    assert "Dagster UI" not in text
    assert not (tmp_path / "data" / "nats" / "server.json").exists()  # the NATS server it started is stopped


def test_up_never_prints_the_password_of_the_nats_url(tmp_path):
    url = f"nats://qraft:s3cr3tpw@127.0.0.1:{free_port()}"
    with qraft_up(tmp_path, "--no-ui", "--no-sources", env={"QRAFT_NATS_URL": url}) as (process, output):
        assert _wait_for(lambda: b"NATS nats://" in output.read_bytes()), output.read_text()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = output.read_text()
    assert f"NATS {url.replace('s3cr3tpw', '***')}; logs in " in text
    assert "s3cr3tpw" not in text
