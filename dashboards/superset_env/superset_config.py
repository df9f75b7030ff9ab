"""Superset's configuration for the Qraft dashboards (read through SUPERSET_CONFIG_PATH).

launch.py sets QRAFT_SUPERSET_HOME (metadata database and secret key) and, on the embedded
store, QRAFT_STORE_LOCK: chDB admits one process per data directory, so every connection
Superset opens takes Qraft's store lock first and gives it back when it closes (Superset
opens a connection per query), and a Qraft process holding the store hands it over.
"""

import fcntl
import os
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

HOME = Path(os.environ["QRAFT_SUPERSET_HOME"])
SECRET_KEY = (HOME / "secret_key").read_text().strip()
SQLALCHEMY_DATABASE_URI = f"sqlite:///{HOME / 'superset.db'}"
STORE_LOCK = os.environ.get("QRAFT_STORE_LOCK", "")
STORE_LOCK_TIMEOUT_S = 60.0


def _acquire_store_lock() -> int:
    """Qraft's exclusive store lock; while waiting, a shared lock on `<lock>.waiting` asks the holder to yield."""
    lock_fd = os.open(STORE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    waiting_fd = os.open(STORE_LOCK + ".waiting", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + STORE_LOCK_TIMEOUT_S
    try:
        fcntl.flock(waiting_fd, fcntl.LOCK_SH)
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return lock_fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(lock_fd)
                    raise TimeoutError(f"the Qraft store stayed locked for {STORE_LOCK_TIMEOUT_S:.0f}s") from None
                time.sleep(0.05)
    finally:
        os.close(waiting_fd)


if STORE_LOCK:
    @event.listens_for(Engine, "do_connect")
    def _lock_before_connect(dialect, conn_rec, cargs, cparams):
        if dialect.name != "clickhousedb":
            return None
        lock_fd = _acquire_store_lock()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except BaseException:
            os.close(lock_fd)
            raise
        conn_rec.info["qraft_store_lock"] = lock_fd
        return connection

    @event.listens_for(Pool, "close")
    def _unlock_after_close(dbapi_connection, conn_rec):
        lock_fd = conn_rec.info.pop("qraft_store_lock", None)
        if lock_fd is not None:
            os.close(lock_fd)
