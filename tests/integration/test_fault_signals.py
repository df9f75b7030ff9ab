"""A process that runs the JVM (CapyMOA) and opens chDB survives the JVM's own faults.

The JVM turns a SIGSEGV in JIT-compiled code into a `NullPointerException`; chDB takes that
signal's handler whenever it opens an engine, and without the hand-back the process below
hangs at the first such exception (or is killed by SIGSEGV).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from qraft_core.detectors.capymoa_engine import capymoa_available

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    from qraft_core.detectors.capymoa_engine import capymoa_available
    from qraft_core.store.sessions import connect_client
    assert capymoa_available()
    # The engine opened twice: chDB takes the handlers at import and again at every open.
    for round in range(2):
        client = connect_client("chdb://" + tempfile.mkdtemp())
        client.query("SELECT 1")
        if round == 0:
            client.close()
    import jpype
    Arrays, Integer = jpype.JClass("java.util.Arrays"), jpype.JClass("java.lang.Integer")
    ordered = jpype.JArray(Integer)([Integer(i) for i in range(1000, 0, -1)])
    for _ in range(2000):  # until the sort is compiled, with its null checks left to the hardware
        Arrays.sort(jpype.JArray(Integer)(ordered))
    with_null = jpype.JArray(Integer)([Integer(1), None, Integer(0)] * 20)
    caught = 0
    for _ in range(100):
        try:
            Arrays.sort(jpype.JArray(Integer)(with_null))
        except Exception as exc:
            caught += "NullPointerException" in type(exc).__name__ or "NullPointerException" in str(exc)
    print("caught", caught, "then", client.query("SELECT 2").result_rows)
    """
)


@pytest.mark.skipif(not capymoa_available(), reason="CapyMOA/JVM not available")
def test_java_exceptions_after_chdb_opened_are_the_jvms_to_handle(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "caught 100 then [(2,)]"


def test_without_the_jvm_nothing_is_recorded_or_restored():
    # This process may host the JVM (other tests start it); a fresh one without it is asked.
    probe = (
        "from qraft_core.fault_signals import remember_jvm_handlers, restore_jvm_handlers;"
        "import chdb;"
        "print(remember_jvm_handlers(), restore_jvm_handlers())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]
