"""The Dagster layer against real chDB: definitions, the window sensor and ranged runs."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, Definitions, build_sensor_context

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _trades(n: int, step_s: float, bad: set[int] = frozenset()) -> bytes:
    lines = []
    for i in range(n):
        ts = (T0 + timedelta(seconds=i * step_s)).isoformat()
        lines.append(json.dumps({
            "event_id": f"e{i}", "source": "binance_spot", "type": "trade", "timestamp": ts,
            "ingest_time": ts, "payload": {"p": "x" if i in bad else "100.5", "q": "2"},
            "meta": {"parser_version": "test/1"},
        }))
    return "\n".join(lines).encode()


@pytest.fixture
def landed(config_dir, monkeypatch):
    """300 trades over 00:00–00:06:28 (one with a bad price) in the test's own store."""
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(300, 1.3, {7}))]).raw_events)
    return rt


@pytest.fixture
def defs(config_dir):
    from qraft_dagster.definitions import build_definitions

    return build_definitions(str(config_dir))


def test_definitions_load_with_the_lineage_of_the_pipeline(defs):
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert AssetKey("raw_events") in graph.get(AssetKey("clean_events")).parent_keys


def test_sensor_requests_closed_windows_once_with_deterministic_keys(landed, defs, tmp_path):
    from qraft_dagster.execute import open_instance

    instance = open_instance(tmp_path / "dagster")
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, resources=defs.resources))
    # The stream is quiet (lateness 0), so every window up to the last event is closed.
    assert [r.run_key for r in first.run_requests] == ["closed:2026-01-05T00:00:00.000Z:2026-01-05T00:07:00.000Z"]
    assert first.run_requests[0].tags["dagster/asset_partition_range_start"] == "2026-01-05-00:00"
    assert first.run_requests[0].tags["dagster/asset_partition_range_end"] == "2026-01-05-00:06"
    again = sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, resources=defs.resources)
    )
    assert again.run_requests == []
    assert json.loads(again.cursor)["through"] == "2026-01-05T00:07:00.000Z"


def test_late_events_reopen_their_window_and_all_after_it(landed, defs, tmp_path):
    from qraft_dagster.execute import open_instance

    instance = open_instance(tmp_path / "dagster")
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, resources=defs.resources))
    late = json.dumps({
        "event_id": "late-1", "source": "binance_spot", "type": "trade",
        "timestamp": "2026-01-05T00:02:30Z", "ingest_time": "2026-01-05T00:09:00Z",
        "payload": {"p": "1", "q": "1"}, "meta": {"parser_version": "test/1"},
    }).encode()
    landed.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", late)]).raw_events)
    second = sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, resources=defs.resources)
    )
    assert [r.run_key.rsplit(":", 3)[0] for r in second.run_requests] == [
        "late:2026-01-05T00:02:00.000Z:2026-01-05T00:07:00.000Z"
    ]
    assert second.run_requests[0].tags["qraft/reason"] == "late"


def test_ranged_run_materializes_clean_events_idempotently(landed, defs, tmp_path):
    from qraft_dagster.execute import drain_sensor, materialize_windows, open_instance

    instance = open_instance(tmp_path / "dagster")
    outcomes = []
    drain_sensor(defs, instance, None, lambda request, result: outcomes.append(result.success))
    assert outcomes == [True]
    store = landed.store
    assert store.count("clean_events") == {"": 299}
    assert store.count("dead_letters", group_by="stage") == {"clean": 1}
    # Replaying the same windows replaces them: nothing doubles.
    result = materialize_windows(defs, instance, T0, T0 + timedelta(minutes=7), landed.config.partitions)
    assert result.success
    assert store.count("clean_events") == {"": 299}
    assert store.count("dead_letters") == {"": 1}
    materialized = instance.get_materialized_partitions(AssetKey("clean_events"))
    assert sorted(materialized) == [f"2026-01-05-00:0{m}" for m in range(7)]


def test_late_events_out_of_reach_reopen_nothing_and_those_in_reach_only_their_windows(
    landed, defs, tmp_path, monkeypatch
):
    from qraft_dagster.execute import open_instance

    monkeypatch.setenv("QRAFT_PARTITIONS_MAX_REOPEN_WINDOWS", "2")
    instance = open_instance(tmp_path / "dagster")
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, resources=defs.resources))

    def late(event_id: str, timestamp: str) -> bytes:
        return json.dumps({
            "event_id": event_id, "source": "binance_spot", "type": "trade", "timestamp": timestamp,
            "ingest_time": "2026-01-05T00:09:00Z", "payload": {"p": "1", "q": "1"},
            "meta": {"parser_version": "test/1"},
        }).encode()

    # Before the first partition, and older than the reach (2 windows back from 00:07): nothing reopens.
    old = late("before-start", "2026-01-04T23:00:00Z") + b"\n" + late("old", "2026-01-05T00:01:30Z")
    landed.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", old)]).raw_events)
    second = sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, resources=defs.resources)
    )
    assert second.run_requests == []
    # One more in reach next to more old ones: only its window and those after it reopen.
    mixed = late("old-2", "2026-01-05T00:00:30Z") + b"\n" + late("in-reach", "2026-01-05T00:05:10Z")
    landed.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", mixed)]).raw_events)
    third = sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=second.cursor, resources=defs.resources)
    )
    assert [r.run_key.rsplit(":", 3)[0] for r in third.run_requests] == [
        "late:2026-01-05T00:05:00.000Z:2026-01-05T00:07:00.000Z"
    ]
