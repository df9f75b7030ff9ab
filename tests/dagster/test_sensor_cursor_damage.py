"""The window sensor against real chDB with a damaged stored cursor: every tick still plans.

A malformed cursor part is dropped (the tick's log names it) and planning falls back
to that part's starting state; a lost `through` resumes after the newest materialized
window instead of recomputing the data from its start.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from dagster import build_sensor_context

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from qraft_core.scheduling import read_cursor

T0 = datetime(2026, 1, 5, tzinfo=UTC)
FIRST_RUN = "closed:2026-01-05T00:00:00.000Z:2026-01-05T00:07:00.000Z"


def _trades(n: int, step_s: float) -> bytes:
    lines = []
    for i in range(n):
        ts = (T0 + timedelta(seconds=i * step_s)).isoformat()
        lines.append(json.dumps({
            "event_id": f"e{i}", "source": "binance_spot", "type": "trade", "timestamp": ts,
            "ingest_time": ts, "payload": {"p": "100.5", "q": "2"}, "meta": {"parser_version": "test/1"},
        }))
    return "\n".join(lines).encode()


@pytest.fixture
def landed(config_dir, monkeypatch):
    """300 trades over 00:00–00:06:28 in the test's own store."""
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(300, 1.3))]).raw_events)
    return rt


@pytest.fixture
def defs(config_dir):
    from qraft_dagster.definitions import build_definitions

    return build_definitions(str(config_dir))


DAMAGED = [
    "garbage", "[]", '"str"', "null", "5", '{"through": "not a time"}', '{"through": 5}', '{"heal": []}',
    '{"heal": {"failures_seen": "abc"}}', '{"heal": {"from": "x"}}', '{"ahead": {"start": "2026-01-05T00:03:00Z"}}',
    '{"ahead": [1, 2]}', '{"landed_seen": {"a": 1}}', '{"quiet_since": true}',
]


@pytest.mark.parametrize("damaged", DAMAGED)
def test_a_damaged_cursor_plans_as_a_fresh_one_and_is_replaced_by_a_well_formed_one(landed, defs, tmp_path, damaged):
    from qraft_dagster.execute import open_instance

    instance = open_instance(tmp_path / "dagster")
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=damaged, resources=defs.resources))
    assert [r.run_key for r in tick.run_requests] == [FIRST_RUN]
    assert read_cursor(tick.cursor).warnings == []
    stored = json.loads(tick.cursor)
    assert stored["through"] == "2026-01-05T00:07:00.000Z"
    assert stored["heal"]["from"] == "2026-01-05T00:00:00.000Z"
    # The next tick reads what this one stored, and has nothing left to do.
    again = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=tick.cursor, resources=defs.resources))
    assert again.run_requests == []


def test_a_lost_through_resumes_after_the_newest_materialized_window(landed, defs, tmp_path):
    from qraft_dagster.execute import drain_sensor, open_instance

    instance = open_instance(tmp_path / "dagster")
    outcomes = []
    cursor = drain_sensor(defs, instance, None, lambda request, result: outcomes.append((request.run_key, result.success)))
    assert outcomes == [(FIRST_RUN, True)]
    damaged = json.dumps({**json.loads(cursor), "through": "not a time"})
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=damaged, resources=defs.resources))
    assert tick.run_requests == []
    assert json.loads(tick.cursor)["through"] == "2026-01-05T00:07:00.000Z"
