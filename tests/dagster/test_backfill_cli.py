"""Replay through Dagster's own CLI: `dagster job backfill`, one run per window, executed in order
by the daemon (the instance allows one run at a time, so window N always follows N-1)."""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from qraft_dagster.execute import ensure_dagster_home

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _trades(n: int) -> bytes:
    return "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=i * 0.9)).isoformat(),
        "ingest_time": (T0 + timedelta(seconds=i * 0.9)).isoformat(),
        "payload": {"s": "BTCUSDT", "p": str(100 + i % 7), "q": "0.5", "m": bool(i % 2)},
        "meta": {"parser_version": "test/1"},
    }) for i in range(n)).encode()


@pytest.mark.timeout(900)
def test_dagster_job_backfill_runs_every_window_in_order(config_dir, tmp_path):
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(200))]).raw_events)
    home = ensure_dagster_home(tmp_path / "dagster")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    backfill = subprocess.run(
        [str(bin_dir / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", "qraft_pipeline",
         "--from", "2026-01-05-00:00", "--to", "2026-01-05-00:02", "--noprompt"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            # Each run is its own process (imports, JVM); a loaded machine needs minutes for four.
            deadline = time.monotonic() + 540

            def backfill_runs() -> list:  # type: ignore[type-arg]
                # The daemon's window sensor may request its own run too; only the backfill's count here.
                return [r for r in instance.get_runs() if "dagster/backfill" in r.tags]

            runs = backfill_runs()
            while time.monotonic() < deadline and (len(runs) < 3 or any(r.status not in FINISHED for r in runs)):
                time.sleep(1)
                runs = backfill_runs()
            assert sorted(r.tags["dagster/partition"] for r in runs) == [
                "2026-01-05-00:00", "2026-01-05-00:01", "2026-01-05-00:02"
            ]
            assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
            assert sorted(instance.get_materialized_partitions(AssetKey("detections"))) == [
                "2026-01-05-00:00", "2026-01-05-00:01", "2026-01-05-00:02"
            ]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert rt.store.count("clean_events") == {"": 200}
    assert rt.store.count("detector_state", start=T0, end=T0 + timedelta(minutes=3), group_by="window_start")
