"""A replay process that crashes is recorded as failed with its signal and its JVM crash file."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from qraft_core.replays import ReplayRegistry, watch_replay

CRASHING_REPLAY = """
import os, signal, sys
from datetime import datetime
from pathlib import Path
from qraft_core.replays import ReplayRegistry
registry = ReplayRegistry(Path(sys.argv[1]))
record = registry.claim(datetime.fromisoformat(sys.argv[3]), datetime.fromisoformat(sys.argv[4]), [], sys.argv[2])
# What a crashing JVM leaves: its report, named by pid, where JAVA_TOOL_OPTIONS points.
assert f"-XX:ErrorFile={registry.crash_dir}/hs_err_pid%p.log" in os.environ["JAVA_TOOL_OPTIONS"]
(registry.crash_dir / f"hs_err_pid{os.getpid()}.log").write_text("# A fatal error has been detected")
os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_replay_killed_by_sigsegv_is_failed_with_the_signal_and_the_crash_file(tmp_path):
    registry = ReplayRegistry(tmp_path / "replays")
    start, end = datetime(2026, 1, 5, 10, tzinfo=UTC), datetime(2026, 1, 5, 11, tzinfo=UTC)
    record = registry.claim(start, end, [])

    returncode = watch_replay(registry.directory, record.id, [
        sys.executable, "-c", CRASHING_REPLAY, str(registry.directory), record.id, start.isoformat(), end.isoformat(),
    ])

    assert returncode == -11
    crashed = registry.get(record.id)
    assert crashed is not None and crashed.status == "failed"
    assert crashed.summary == {
        "error": "the replay process was killed by SIGSEGV", "exit": "was killed by SIGSEGV",
        "jvm_crash_file": str(registry.crash_dir / f"hs_err_pid{crashed.pid}.log"),
    }
    assert crashed.pid != record.pid and crashed.finished_at


def test_replay_status_reports_how_a_replay_ended(config_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from qraft_cli import main

    registry = ReplayRegistry(tmp_path / "data" / "replays")
    record = registry.claim(datetime(2026, 1, 5, 10, tzinfo=UTC), datetime(2026, 1, 5, 11, tzinfo=UTC), [])
    registry.finish_if_running(record.id, -9)
    shown = CliRunner().invoke(main, ["--config-dir", str(config_dir), "replay", "status", record.id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["summary"] == {"error": "the replay process was killed by SIGKILL",
                                                   "exit": "was killed by SIGKILL"}
    listed = CliRunner().invoke(main, ["--config-dir", str(config_dir), "replay", "status", "--json"])
    assert [(r["id"], r["status"]) for r in json.loads(listed.output)] == [(record.id, "failed")]
    missing = CliRunner().invoke(main, ["--config-dir", str(config_dir), "replay", "status", "../etc"])
    assert missing.exit_code == 2 and "not a replay id" in missing.output
