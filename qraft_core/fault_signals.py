"""One owner for the fault signals of a process that hosts both the JVM and chDB.

The JVM behind CapyMOA takes SIGSEGV, SIGBUS, SIGILL and SIGFPE on purpose (implicit
null checks in compiled code, safepoint polls) and handles them itself. chDB installs
its own fatal-signal handlers when it is imported and again each time it opens an
engine; a JVM fault that reaches them hangs or kills the process (seen as a suite
killed by SIGSEGV, and reproduced by a Java `NullPointerException` in JIT-compiled
code after a chDB connection was opened: the process hangs).

So the JVM's handlers are recorded when the JVM has started (`remember_jvm_handlers`)
and put back whenever chDB has opened an engine (`restore_jvm_handlers`). A fault of
chDB's own then reaches the JVM's handler, which passes on what is not its own and
reports a crash as the JVM does (an hs_err file). A process without the JVM is left
alone (`tests/integration/test_fault_signals.py` checks both cases in fresh processes).
Linux only: elsewhere both calls do nothing.

Also here: the death signal of child processes (`terminated_with_parent`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

# glibc's `struct sigaction` is 152 bytes on x86-64 and aarch64 and starts with the
# handler's address; it is copied as opaque bytes, so a larger buffer is safe.
_SIGACTION_BYTES = 256
_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)
_recorded: dict[signal.Signals, ctypes.Array[ctypes.c_char]] = {}
_lock = threading.Lock()


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


def _current(libc: ctypes.CDLL, signum: int) -> ctypes.Array[ctypes.c_char] | None:
    action = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if libc.sigaction(signum, None, action) != 0:
        return None
    return action


def _owner(libc: ctypes.CDLL, action: ctypes.Array[ctypes.c_char]) -> str:
    """The file name of the shared object that holds the handler of `action`."""
    handler = ctypes.c_void_p.from_buffer(action).value
    if not handler:
        return ""
    info = _DlInfo()
    if not libc.dladdr(ctypes.c_void_p(handler), ctypes.byref(info)) or not info.dli_fname:
        return ""
    return info.dli_fname.decode(errors="replace")


def remember_jvm_handlers() -> bool:
    """Record the current fault handlers if the JVM installed them; whether it did."""
    libc = _libc()
    if libc is None:
        return False
    actions = {signum: _current(libc, signum) for signum in _SIGNALS}
    owned = {s: a for s, a in actions.items() if a is not None and "libjvm" in _owner(libc, a)}
    if len(owned) != len(_SIGNALS):
        return False
    with _lock:
        _recorded.update(owned)
    return True


def restore_jvm_handlers() -> bool:
    """Put the recorded JVM handlers back (after chDB took them); whether there were any."""
    with _lock:
        recorded = dict(_recorded)
    libc = _libc()
    if not recorded or libc is None:
        return False
    for signum, action in recorded.items():
        libc.sigaction(signum, action, None)
    return True


PR_SET_PDEATHSIG = 1


def terminated_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child SIGTERM when its parent dies (Linux).

    The processes Qraft starts (the children of `qraft up`, the embedded nats-server) run in
    sessions of their own, so a Ctrl-C reaches only their parent, which stops them in turn; a parent
    killed with SIGKILL would leave them running, and the next start would run a second lander and
    second sources beside them. The signal follows the thread that started the child, so a child
    started from a worker thread is stopped when that thread ends."""
    libc = _libc()
    if libc is None:
        return None
    prctl = libc.prctl  # resolved before the fork: the child only calls it
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal
