"""An exclusive lock a process holds on a file for as long as it runs, naming its pid to the next one."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another running process holds the lock; `holder` is its pid as it wrote it ("unknown" if it did not)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path, self.holder = path, holder


def hold_lock(path: Path) -> int:
    """Take the lock on `path` (created if missing) and write this process's pid in it; returns the
    descriptor that holds it (closing it, or the process ending, lets go). The kernel drops the lock
    of a killed process, so a file left behind by one does not count.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "run.lock"
    >>> held = hold_lock(path)
    >>> path.read_text() == str(os.getpid())
    True
    >>> os.close(held); os.close(hold_lock(path))
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise LockHeld(path, holder) from None
    os.ftruncate(handle, 0)
    os.write(handle, str(os.getpid()).encode())
    return handle
