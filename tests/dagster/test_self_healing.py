"""Self-healing pipeline runs against real chDB and a real Dagster instance.

A window whose detector state was lost is rebuilt from the last good snapshot,
with exactly the detections an uninterrupted run gives; a failed run is re-run
by the sensor from the first window not materialized, ahead of later windows.
"""

import json
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, build_sensor_context

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from qraft_core.store.base import Filter

T0 = datetime(2026, 1, 5, tzinfo=UTC)
WINDOWS = 20


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def trades(seed: int = 7) -> bytes:
    """One trade a second for 20 minutes; volatility and volume jump at minute 10."""
    rng = random.Random(seed)
    price, lines = 100.0, []
    for i in range(WINDOWS * 60):
        calm = i < 600
        price *= 1 + rng.gauss(0, 0.0005 if calm else 0.004)
        ts = (T0 + timedelta(seconds=i)).isoformat()
        lines.append(json.dumps({
            "event_id": f"t{i}", "source": "binance_spot", "type": "trade", "timestamp": ts, "ingest_time": ts,
            "payload": {"s": "BTCUSDT", "p": f"{price:.4f}", "q": f"{rng.expovariate(1 if calm else 0.2):.4f}",
                        "m": rng.random() < 0.5},
            "meta": {"parser_version": "test/1"},
        }))
    return "\n".join(lines).encode()


@pytest.fixture
def rt(config_dir, monkeypatch):
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    runtime = Runtime.load(config_dir)
    runtime.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", trades())]).raw_events)
    return runtime


@pytest.fixture
def defs(config_dir):
    from qraft_dagster.definitions import build_definitions

    return build_definitions(str(config_dir))


def outputs(rt: Runtime, start: datetime, end: datetime) -> tuple[list, list]:
    with rt.store.session():
        signals = sorted(rt.store.select("detections", start=start, end=end, columns=["signal_id"])["signal_id"])
        patterns = sorted(rt.store.select("pattern_events", start=start, end=end,
                                          columns=["pattern_id", "restart"]).rows())
    return signals, patterns


def test_a_failed_run_is_rerun_and_lost_state_is_rebuilt_with_the_same_detections(rt, defs, tmp_path, config_dir):
    from qraft_dagster.execute import execute_request, materialize_windows, open_instance
    from qraft_dagster.sensors.windows import RESTART_TAG

    instance = open_instance(tmp_path / "dagster")
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    detectors = config_dir / "detectors.yaml"
    good = detectors.read_text()
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, resources=defs.resources))
    assert [r.run_key for r in first.run_requests] == ["closed:2026-01-05T00:00:00.000Z:2026-01-05T00:20:00.000Z"]
    detectors.write_text(re.sub(r"algorithm: \w+", "algorithm: NoSuchAlgorithm", good, count=1))  # a broken deploy
    failed = execute_request(defs, instance, first.run_requests[0])
    assert not failed.success
    detectors.write_text(good)  # fixed; nobody replays by hand

    # The sensor re-runs the failed windows from the first one not materialized, ahead of the queue.
    heal = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=first.cursor, resources=defs.resources))
    assert [(r.run_key, r.tags["qraft/attempt"], r.tags["dagster/priority"]) for r in heal.run_requests] == [
        (f"retry:2026-01-05T00:00:00.000Z:2026-01-05T00:20:00.000Z:{failed.run_id}", "1", "1")
    ]
    assert execute_request(defs, instance, heal.run_requests[0]).success
    done = instance.get_materialized_partitions(AssetKey("explanation_cards"))
    assert sorted(done) == [f"2026-01-05-00:{m:02d}" for m in range(WINDOWS)]
    again = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=heal.cursor, resources=defs.resources))
    assert again.run_requests == []  # seen once, the failure is not re-requested
    reference = outputs(rt, at(10), at(WINDOWS))
    assert reference[0] and reference[1], "the seeded data must give signals and findings to compare"
    assert all(restart == 1 for _, restart in reference[1])  # findings of a re-run say so

    # A run killed after window 5: the state and detections of the windows after it are gone.
    for table in ("detector_state", "detections"):
        rt.store.delete(table, [Filter("window_start", ">=", at(6))])
    rebuilt = materialize_windows(defs, instance, at(10), at(WINDOWS), rt.config.partitions)

    assert rebuilt.success
    assert instance.get_run_by_id(rebuilt.run_id).tags[RESTART_TAG] == "rebuilt from 2026-01-05T00:06:00.000Z"
    assert outputs(rt, at(10), at(WINDOWS)) == reference
