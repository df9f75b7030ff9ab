"""A pipeline run killed (SIGKILL) at a seeded step: marked failed, re-run, every window materialized.

Full drill only (`make chaos`): it executes dozens of Dagster runs. The reduced form in
`make test` is tests/dagster/test_self_healing.py (a failed run re-run by the sensor, lost
detector state rebuilt with the same detections).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterRunStatus, RunsFilter

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from tests.chaos.conftest import wait_for
from tests.chaos.pipeline_driver import drive

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
STEP = timedelta(milliseconds=60)  # 1,000 events per minute window

pytestmark = pytest.mark.skipif(not os.environ.get("QRAFT_CHAOS_EVENTS"), reason="full drill: make chaos")


def trades(start: int, count: int) -> bytes:
    lines = []
    for i in range(start, start + count):
        ts = (T0 + i * STEP).isoformat()
        lines.append(json.dumps({
            "event_id": f"p{i}", "source": "binance_spot", "type": "trade", "timestamp": ts, "ingest_time": ts,
            "payload": {"s": "BTCUSDT", "p": f"{42000 + (i * 7919 % 1000) / 10:.1f}", "q": "0.01", "m": i % 2 == 0},
            "meta": {"parser_version": "chaos/1"},
        }))
    return "\n".join(lines).encode()


def test_a_run_killed_mid_way_is_marked_failed_and_rerun_until_every_window_is_materialized(
    config_dir, monkeypatch, tmp_path, chaos_events, chaos_rng
):
    for key, value in {"QRAFT_PARTITIONS_ALLOWED_LATENESS_S": "0", "QRAFT_PARTITIONS_MAX_WINDOWS_PER_RUN": "10",
                       "QRAFT_PARTITIONS_MAX_RUNS_PER_TICK": "1", "QRAFT_MLFLOW_ENABLED": "false"}.items():
        monkeypatch.setenv(key, value)
    rt = Runtime.load(config_dir)
    for start in range(0, chaos_events, 50_000):
        chunk = land_batch([("qraft.raw.binance_spot", trades(start, min(50_000, chaos_events - start)))])
        rt.store.insert("raw_events", chunk.raw_events)
    windows = -(-chaos_events * STEP // timedelta(minutes=1))
    home, cursor = tmp_path / "dagster", tmp_path / "cursor.json"
    from qraft_dagster.execute import open_instance

    instance = open_instance(home)
    victim_run = chaos_rng.randrange(0, max(1, windows // 10 - 1))
    victim_step = chaos_rng.choice(["clean_events", "features", "detections", "pattern_events"])
    driver = subprocess.Popen([sys.executable, "-m", "tests.chaos.pipeline_driver", str(config_dir), str(home),
                               str(cursor)], cwd=REPO, start_new_session=True)

    def victim_step_done() -> bool:
        records = instance.get_run_records(RunsFilter(job_name="qraft_pipeline"), order_by="create_timestamp",
                                           ascending=True)
        if len(records) <= victim_run:
            return False
        run_id = records[victim_run].dagster_run.run_id
        return any(e.dagster_event and e.dagster_event.asset_key == AssetKey(victim_step)
                   for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION))

    try:
        assert wait_for(victim_step_done, timeout_s=900, every_s=0.5), (victim_run, victim_step)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    killed = instance.get_runs(RunsFilter(job_name="qraft_pipeline", statuses=[DagsterRunStatus.STARTED]))
    assert len(killed) == 1

    drive(config_dir, home, cursor)  # what the daemon's next ticks do: no manual step

    after = instance.get_run_by_id(killed[0].run_id)
    assert after.status == DagsterRunStatus.FAILURE
    retries = instance.get_runs(RunsFilter(job_name="qraft_pipeline", tags={"qraft/restart": killed[0].run_id}))
    assert retries and all(r.status == DagsterRunStatus.SUCCESS for r in retries)
    done = instance.get_materialized_partitions(AssetKey("explanation_cards"))
    assert sorted(done) == [(T0 + timedelta(minutes=m)).strftime("%Y-%m-%d-%H:%M") for m in range(windows)]
    with rt.store._client_in_session() as client:
        clean = client.query("SELECT count(), uniqExact(event_id) FROM clean_events").result_rows[0]
    assert clean == (chaos_events, chaos_events)
