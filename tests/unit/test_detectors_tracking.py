"""Detector runs recorded in MLflow (a local SQLite store), and the disabled no-op."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qraft_core.config import QraftConfig
from qraft_core.detectors import load_detectors
from qraft_core.tracking import Tracker, default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_a_detections_run_is_recorded(tmp_path: Path) -> None:
    import mlflow

    tracker = Tracker.from_config(QraftConfig(data_dir=tmp_path))
    assert tracker.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    config = load_detectors(REPO / "config")
    metadata = {"windows": 2, "rows_processed": 100, "events_processed": 4000, "latency_s": 0.5, "engines": ["capymoa", "river"],
                "signals_by_detector": {"bar_anomaly": 4, "vol_drift": 2},
                "detector_seconds": {"bar_anomaly": 0.125, "vol_drift": 0.0}}
    run_id = tracker.log_detections(config, T0, T0 + timedelta(minutes=2), metadata)
    assert run_id is not None
    run = mlflow.MlflowClient(tracking_uri=tracker.tracking_uri).get_run(run_id)
    assert run.data.metrics["rows_processed"] == 100
    assert run.data.metrics["events_processed"] == 4000
    assert run.data.metrics["signals.bar_anomaly"] == 4
    assert run.data.metrics["signals_total"] == 6
    assert run.data.metrics["anomaly_rate"] == 0.04  # bar_anomaly's 4 signals over 100 bars
    assert run.data.metrics["detector_seconds.bar_anomaly"] == 0.125
    assert run.data.metrics["detector_seconds.vol_drift"] == 0.0
    assert run.data.params["vol_drift.algorithm"] == "qraft.CalibratedDrift"
    assert run.data.params["regime_dbstream.jump_distance"] == "3.0"
    assert run.data.params["window_start"] == "2026-01-05T00:00:00.000Z"
    assert run.data.tags["version.river"].startswith("0.")
    assert run.data.tags["engines"] == "capymoa,river"
    assert run.info.status == "FINISHED"


def test_disabled_tracking_touches_nothing(tmp_path: Path) -> None:
    tracker = Tracker(default_tracking_uri(tmp_path), enabled=False)
    assert tracker.log_detections(load_detectors(REPO / "config"), T0, T0, {}) is None
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_tracking_store_does_not_fail_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker("http://127.0.0.1:9/nothing-listens-here")
    config = load_detectors(REPO / "config")
    assert tracker.log_detections(config, T0, T0, {"rows_processed": 0}) is None
