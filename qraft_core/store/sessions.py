"""Who holds a ClickHouse connection: per thread on a server, per process on chDB.

A server DSN gets one clickhouse-connect client per thread (an HTTP client
is not meant to be shared by concurrent calls) and no lock.

chDB hosts one engine per process and one process may open a data directory
at a time. `EmbeddedEngine` is this process's engine: every thread and every
store object on the path share one open client while any of them is in a
session, and the cross-process file lock (`<dir>.lock`) is held while the
engine is open. A process that finds the lock taken holds a shared lock on
`<dir>.lock.waiting` while it waits; the holder checks that file when a
session starts and when it goes idle, lets the sessions in flight finish
(new ones wait), closes the engine and stays back until the waiter has the
lock. So a long-running process (the API) may keep the engine open between
requests (`keep_open_s`) without ever keeping the lander or a pipeline run
out for longer than the sessions it has in flight.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from qraft_core.fault_signals import restore_jvm_handlers
from qraft_core.redact import redact
from qraft_core.store.base import StoreError, StoreUnavailable

# How often an idle open engine looks for a waiting process, and how long a
# holder that handed the store over stays back (the waiter polls every 50 ms).
_IDLE_POLL_S = 0.02
_HANDOVER_MAX_S = 2.0
_INHERITED: list[Any] = []
log = logging.getLogger(__name__)


class WaitSignal:
    """A shared flock held by processes waiting for the store; the holder probes it."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextmanager
    def waiting(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def someone_waits(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def wait_served(self, lock_path: str, max_s: float) -> None:
        """Until a waiter holds the lock at `lock_path`, nobody waits any more, or `max_s` passed."""
        deadline = time.monotonic() + max_s
        while self.someone_waits() and not lock_held(lock_path) and time.monotonic() < deadline:
            time.sleep(_IDLE_POLL_S)


def lock_held(lock_path: str) -> bool:
    """Whether some process holds the store lock at `lock_path` right now."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken just now
    return False


def lock_path_of(dsn: str) -> str:
    return str(Path(dsn.removeprefix("chdb://"))) + ".lock"


class EmbeddedEngine:
    """The one chDB engine of this process (see the module docstring)."""

    def __init__(self, connect: Callable[[str], Any]) -> None:
        self._connect = connect
        self._cond = threading.Condition()
        self._local = threading.local()
        self._reset()

    def _reset(self) -> None:
        self._dsn: str | None = None
        self._client: Any = None
        self._file_lock: FileLock | None = None
        self._signal: WaitSignal | None = None
        self._yield_to: WaitSignal | None = None
        self._users = 0
        self._opening = False
        self._idle_until = 0.0
        self._reaper: threading.Thread | None = None
        self._probe_failing = False

    @contextmanager
    def session(self, dsn: str, lock_timeout_s: float, keep_open_s: float) -> Iterator[Any]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            if self._local.dsn != dsn:
                raise StoreError(
                    f"cannot open {redact(dsn)} while this thread holds {redact(self._local.dsn)}: "
                    "chDB hosts one data directory per process"
                )
            self._local.depth = depth + 1
            try:
                yield self._client
            finally:
                self._local.depth = depth
            return
        client = self._enter(dsn, lock_timeout_s)
        self._local.depth, self._local.dsn = 1, dsn
        try:
            yield client
        finally:
            self._local.depth = 0
            self._leave(keep_open_s)

    def current_client(self, dsn: str) -> Any:
        """The client if this thread is in a session on `dsn`, else None."""
        if getattr(self._local, "depth", 0) and self._local.dsn == dsn:
            return self._client
        return None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def _enter(self, dsn: str, lock_timeout_s: float) -> Any:
        deadline = time.monotonic() + lock_timeout_s
        with self._cond:
            while True:
                if self._client is not None:
                    handing_over = self._someone_waits()
                    if self._dsn == dsn and not handing_over:
                        self._users += 1
                        return self._client
                    if (
                        self._users
                    ):  # wait for the sessions in flight, then hand over or switch path
                        self._cond.wait()
                        continue
                    self._close(handing_over)
                if (
                    self._opening
                ):  # another thread is waiting for the lock: wait with it, up to our own deadline
                    if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise self._held_elsewhere(dsn, lock_timeout_s)
                    continue
                self._opening = True
                try:
                    # Waiting for the file lock can take long: others may leave or give up meanwhile.
                    self._cond.release()
                    try:
                        opened = self._open(
                            dsn, max(0.0, deadline - time.monotonic()), lock_timeout_s
                        )
                    finally:
                        self._cond.acquire()
                    self._dsn, self._client, self._file_lock, self._signal = opened
                    self._users = 1
                    return self._client
                finally:
                    self._opening = False
                    self._cond.notify_all()

    def _leave(self, keep_open_s: float) -> None:
        with self._cond:
            self._users -= 1
            if self._users == 0 and self._client is not None:
                if keep_open_s <= 0:
                    self._close()  # a short-session process closes as it always did, without staying back
                elif self._someone_waits():
                    self._close(handing_over=True)
                else:
                    self._idle_until = time.monotonic() + keep_open_s
                    self._start_reaper()
            self._cond.notify_all()

    def _open(
        self, dsn: str, timeout_s: float, lock_timeout_s: float
    ) -> tuple[str, Any, FileLock, WaitSignal]:
        lock_path = lock_path_of(dsn)
        if self._yield_to is not None:  # stay back until the process we handed the store to has it
            self._yield_to.wait_served(lock_path, _HANDOVER_MAX_S)
            self._yield_to = None
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        file_lock = FileLock(lock_path, thread_local=False)
        signal = WaitSignal(lock_path + ".waiting")
        try:
            file_lock.acquire(timeout=0)
        except Timeout:
            with signal.waiting():
                try:
                    file_lock.acquire(timeout=timeout_s)
                except Timeout as exc:
                    raise self._held_elsewhere(dsn, lock_timeout_s) from exc
        try:
            client = self._connect(dsn)
        except Exception as exc:
            file_lock.release()
            raise StoreUnavailable(
                f"cannot open the store at {redact(dsn)}: {redact(str(exc))}"
            ) from exc
        return dsn, client, file_lock, signal

    @staticmethod
    def _held_elsewhere(dsn: str, lock_timeout_s: float) -> StoreUnavailable:
        return StoreUnavailable(
            f"the embedded store at {redact(dsn)} is held by another process "
            f"(lock {lock_path_of(dsn)}) for more than {lock_timeout_s:.0f}s"
        )

    def _close(self, handing_over: bool = False) -> None:
        client, file_lock = self._client, self._file_lock
        self._yield_to = self._signal if handing_over else None
        self._dsn = self._client = self._file_lock = self._signal = None
        try:
            if client is not None:
                client.close()
        finally:
            if file_lock is not None:
                file_lock.release()

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="qraft-store-idle", daemon=True)
            self._reaper.start()

    def _someone_waits(self) -> bool:
        """Whether another process waits for the open engine; a failed probe (out of file
        descriptors, say) counts as nobody for now: the reaper probes again at its next poll."""
        assert self._signal is not None
        try:
            waits = self._signal.someone_waits()
        except OSError as exc:
            if not self._probe_failing:  # once per failing spell, not at every poll
                log.warning("cannot check whether another process waits for the store: %s", exc)
            self._probe_failing = True
            return False
        self._probe_failing = False
        return waits

    def _reap(self) -> None:
        """Close the idle engine when its time is up or another process waits for it."""
        with self._cond:
            try:
                while self._client is not None:
                    handing_over = self._someone_waits()
                    if self._users == 0 and (handing_over or time.monotonic() >= self._idle_until):
                        self._close(handing_over)
                        self._cond.notify_all()
                        break
                    self._cond.wait(timeout=_IDLE_POLL_S)
            finally:  # whatever ends this thread, the next idle session starts another
                self._reaper = None

    def close(self) -> None:
        """Close the engine if no session is using it (at exit, or when a caller is done for good)."""
        with self._cond:
            if self._users == 0 and self._client is not None:
                self._close()
            self._cond.notify_all()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's engine without touching it.

        The client stays referenced so that no finalizer runs on an engine the child does not own.
        """
        if self._client is not None:
            _INHERITED.append(self._client)
        self._cond = threading.Condition()
        self._local = threading.local()
        self._reset()


class ServerClients:
    """One clickhouse-connect client per thread for a server DSN."""

    def __init__(self, dsn: str, connect: Callable[[str], Any] | None = None) -> None:
        self.dsn = dsn
        self._connect = connect or connect_client
        self._local = threading.local()

    def current_client(self) -> Any:
        return getattr(self._local, "client", None)

    @contextmanager
    def session(self) -> Iterator[Any]:
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                client = self._connect(self.dsn)
            except Exception as exc:
                raise StoreUnavailable(
                    f"cannot open the store at {redact(self.dsn)}: {redact(str(exc))}"
                ) from exc
            self._local.client = client
        yield client


def connect_client(dsn: str, **options: Any) -> Any:
    """A clickhouse-connect client; opening a chDB engine hands the fault signals back to the JVM."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=dsn, **options)
    if dsn.startswith("chdb://"):
        restore_jvm_handlers()
    return client


ENGINE = EmbeddedEngine(connect_client)
atexit.register(ENGINE.close)
os.register_at_fork(after_in_child=ENGINE.forget_after_fork)
