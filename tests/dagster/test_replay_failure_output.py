"""A failed pipeline run is told in one line (its step and reason), with no Dagster stack trace on the
terminal; a replay over it records that line and no pattern counts. Real chDB and Dagster."""

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.lander import land_batch
from qraft_core.replays import RUN_FAILURES
from qraft_core.runtime import Runtime

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _trades(n: int) -> bytes:
    return "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=i)).isoformat(), "ingest_time": (T0 + timedelta(seconds=i)).isoformat(),
        "payload": {"p": "100.5", "q": "2"}, "meta": {"parser_version": "test/1"},
    }) for i in range(n)).encode()


@pytest.fixture
def broken(config_dir, monkeypatch):
    """Five minutes of trades landed, and a detector whose algorithm does not exist (a broken deploy)."""
    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(300))]).raw_events)
    detectors = config_dir / "detectors.yaml"
    detectors.write_text(re.sub(r"algorithm: \w+", "algorithm: NoSuchAlgorithm", detectors.read_text(), count=1))
    return rt


def test_a_failed_run_is_one_line_naming_its_step_and_reason(broken, config_dir, tmp_path, capfd, caplog):
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import materialize_windows, open_instance

    defs = build_definitions(str(config_dir))
    instance = open_instance(tmp_path / "dagster")
    with caplog.at_level(logging.ERROR, logger=RUN_FAILURES):
        result = materialize_windows(defs, instance, T0, T0 + timedelta(minutes=5), broken.config.partitions)
    assert not result.success
    [told] = [record.getMessage() for record in caplog.records if record.name == RUN_FAILURES]
    assert told.startswith(f"run {result.run_id} failed at step detections: ")
    assert "NoSuchAlgorithm" in told and "\n" not in told
    captured = capfd.readouterr()
    assert "Stack Trace" not in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out


def test_a_replay_over_a_failing_run_records_the_line_and_no_counts(broken, config_dir):
    from qraft_cli import pipeline_services
    from qraft_core.services.replay import ReplayRequest

    services = pipeline_services(config_dir, runs_pipeline=True, ephemeral=True)
    result = services.replays.run(ReplayRequest(T0, T0 + timedelta(minutes=5)))
    assert result.status == "failed"
    assert re.fullmatch(r"run \S+ failed at step detections: .*NoSuchAlgorithm.*", result.summary["error"])
    assert "pattern_events" not in result.summary and "events" not in result.summary
    [stored] = services.replays.status(result.record.id)
    assert (stored.status, stored.summary["error"]) == ("failed", result.summary["error"])
    with broken.store.session():
        audit = broken.store.select("audit_log", columns=["action", "after"])
    assert audit["action"].to_list()[-1] == "replay"
    assert json.loads(audit["after"].to_list()[-1])["error"] == result.summary["error"]


def test_a_replay_says_which_detectors_failed_on_a_stream_and_the_first_error(config_dir, monkeypatch):
    from qraft_cli import pipeline_services
    from qraft_core.detectors.calibrated import CalibratedAnomaly
    from qraft_core.services.replay import ReplayRequest

    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(300))]).raw_events)

    def explode(self, bars):  # type: ignore[no-untyped-def]
        raise ValueError("exploded")

    monkeypatch.setattr(CalibratedAnomaly, "update", explode)
    services = pipeline_services(config_dir, runs_pipeline=True, ephemeral=True)
    result = services.replays.run(ReplayRequest(T0, T0 + timedelta(minutes=5)))
    assert result.status == "succeeded"
    # Failing on its stream in every window, it restarted each time; the other detectors ran on.
    assert result.summary["detector_failures"] == {"bar_anomaly": 5}
    assert result.summary["detector_first_failure"] == {
        "bar_anomaly": "binance_spot: in window 2026-01-05T00:00:00.000Z: ValueError: exploded"}
