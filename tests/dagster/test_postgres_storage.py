"""Dagster on the machine's PostgreSQL, configured only through qraft.yaml's `dagster.storage`.

A daemon sensor tick (the daemon's own code path) stores its cursor and queues its run there,
and a run materializes windows into the event log there; the rows are read back with SQL.
"""

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml
from dagster import AssetKey, DagsterRunStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import InstigatorState
from dagster._core.test_utils import (
    InProcessTestWorkspaceLoadTarget,
    create_test_daemon_workspace_context,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._serdes import deserialize_value

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime

SERVER = "postgresql://postgres@127.0.0.1:5432"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _trades(n: int) -> bytes:
    return "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=i * 1.5)).isoformat(),
        "ingest_time": (T0 + timedelta(seconds=i * 1.5)).isoformat(),
        "payload": {"s": "BTCUSDT", "p": str(100 + i % 5), "q": "1"}, "meta": {"parser_version": "test/1"},
    }) for i in range(n)).encode()


@pytest.fixture
def database():
    """A database of this test's own on the local server, dropped afterwards."""
    name = f"qraft_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the local PostgreSQL server (127.0.0.1:5432, user postgres) is required: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_runs_materializations_and_sensor_cursor_live_in_postgres(config_dir, tmp_path, monkeypatch, database):
    monkeypatch.setenv("QRAFT_DAGSTER_STORAGE", database)
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(100))]).raw_events)

    from qraft_dagster.execute import QUIET, open_instance
    from qraft_dagster.sensors.windows import PIPELINE_JOB, window_tags

    instance = open_instance(rt.config.dagster_home, rt.config.dagster)
    written = yaml.safe_load((rt.config.dagster_home / "dagster.yaml").read_text())
    assert written["storage"]["postgres"]["postgres_db"]["db_name"] == database.rsplit("/", 1)[1]
    assert written["run_coordinator"]["config"] == {"max_concurrent_runs": 1}
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    code = tmp_path / "pg_definitions.py"
    code.write_text(f"from qraft_dagster.definitions import build_definitions\ndefs = build_definitions({str(config_dir)!r})\n")
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(code), attribute="defs"))
    with create_test_daemon_workspace_context(InProcessTestWorkspaceLoadTarget(origin), instance) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))

    # The sensor's run waits in the queue (no daemon dequeues it here); run it in this process.
    queued = instance.get_runs()
    assert [(r.status, r.tags["qraft/reason"]) for r in queued] == [(DagsterRunStatus.QUEUED, "closed")]
    # Only the first asset of the job: the storage is what is under test, not the detectors.
    result = _defs(config_dir).resolve_job_def(PIPELINE_JOB).execute_in_process(
        run_config=QUIET, instance=instance, asset_selection=[AssetKey("clean_events")],
        tags=window_tags(T0, T0 + timedelta(minutes=3), rt.config.partitions),
    )
    assert result.success
    assert sorted(instance.get_materialized_partitions(AssetKey("clean_events"))) == [
        "2026-01-05-00:00", "2026-01-05-00:01", "2026-01-05-00:02"
    ]
    instance.dispose()

    with psycopg.connect(database) as conn:
        statuses = conn.execute("SELECT status FROM runs ORDER BY id").fetchall()
        materialized = conn.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND asset_key = %s", (AssetKey("clean_events").to_string(),)
        ).fetchone()
        bodies = conn.execute("SELECT instigator_body FROM instigators").fetchall()
    assert statuses == [("QUEUED",), ("SUCCESS",)]
    assert materialized == (3,)
    cursors = [json.loads(deserialize_value(body, InstigatorState).instigator_data.cursor) for (body,) in bodies]
    assert [c["through"] for c in cursors] == ["2026-01-05T00:03:00.000Z"]


def _defs(config_dir):  # type: ignore[no-untyped-def]
    from qraft_dagster.definitions import build_definitions

    return build_definitions(str(config_dir))
