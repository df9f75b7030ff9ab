"""Pipeline monitoring on real parts: the API's /metrics over a migrated embedded store and a
replay registry, and the Dagster collector over an ephemeral Dagster instance."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import AssetMaterialization, DagsterInstance, DagsterRun, DagsterRunStatus
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qraft_core.api.app import create_app
from qraft_core.config import PartitionsConfig, QraftConfig
from qraft_core.monitoring import PipelineCollector
from qraft_core.replays import ReplayRecord
from qraft_core.store import ClickHouseStore
from qraft_core.store.clickhouse import polars_dtype
from qraft_core.store.schema import spec
from qraft_dagster.assets.metadata import run_summary
from qraft_dagster.monitoring import DagsterRunsCollector
from qraft_dagster.replay import detections_seconds

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
PARTITIONS = PartitionsConfig(interval_minutes=1, start=T0, allowed_lateness_s=30)
NEWEST_EVENT = T0 + timedelta(minutes=25, seconds=45)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    columns = spec(table).columns
    return pl.DataFrame([{c: row.get(c) for c in columns} for row in rows],
                        schema={c: polars_dtype(t) for c, t in columns.items()})


def finding(type_: str, window_minute: int) -> dict[str, Any]:
    return {"pattern_id": uuid.uuid4().hex, "type": type_, "timestamp": at(window_minute),
            "window_start": at(window_minute), "source_streams": ["btc"], "confidence": 0.9,
            "cross_validated": 0, "algorithm": "A", "algorithm_version": "1", "restart": 0, "body": "{}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class Runtime:
    config: QraftConfig
    config_path: Path
    store: ClickHouseStore
    data_dir: Path


@pytest.fixture
def runtime(chdb_store: ClickHouseStore, tmp_path: Path) -> Runtime:
    """20 detected windows (0-19 min), events landed up to 25:45, 5 anomalies and 1 drift, 3 replays."""
    with chdb_store.session():
        chdb_store.insert("raw_events", frame("raw_events", [
            {"event_id": f"e{i}", "source": "btc", "type": "trade", "timestamp": t, "ingest_time": t,
             "landed_at": t, "payload": "{}", "parser_version": "1", "raw_checksum": ""}
            for i, t in enumerate([at(0), at(12), NEWEST_EVENT])]))
        chdb_store.insert("detector_state", frame("detector_state", [
            {"window_start": at(m), "detector": "d", "stream": "btc", "state": "", "config_hash": ""}
            for m in range(20)]))
        chdb_store.insert("pattern_events", frame("pattern_events", [
            finding("anomaly", 2), finding("anomaly", 2), finding("anomaly", 15), finding("anomaly", 18),
            finding("anomaly", 19), finding("concept_drift", 1)]))
    replays = tmp_path / "data" / "replays"
    replays.mkdir(parents=True)
    for status in ("succeeded", "failed", "running"):
        record = ReplayRecord(id=f"r-{status}", start=T0.isoformat(), end=at(5).isoformat(), sources=["btc"],
                              status=status)
        (replays / f"{record.id}.json").write_text(json.dumps(asdict(record)))
    config = QraftConfig(data_dir=tmp_path / "data", partitions=PARTITIONS)
    return Runtime(config, REPO / "config", chdb_store, tmp_path / "data")


def collected(runtime: Runtime, now: datetime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(runtime.store, PARTITIONS, runtime.data_dir / "replays", lambda: now))
    return samples(generate_latest(registry).decode())


def test_windows_behind_count_closed_windows_past_the_newest_detected_one(runtime):
    # Still landing: the watermark 25:15 closes windows up to 25:00; the detectors reached 20:00.
    live = collected(runtime, NEWEST_EVENT + timedelta(seconds=5))
    assert live[("qraft_windows_behind", ())] == 5
    assert live[("qraft_newest_closed_window_end_seconds", ())] == at(25).timestamp()
    assert live[("qraft_newest_detected_window_end_seconds", ())] == at(20).timestamp()
    assert live[("qraft_window_seconds", ())] == 60
    # Quiet for the allowed lateness: the window holding the newest event closes too.
    quiet = collected(runtime, NEWEST_EVENT + timedelta(seconds=30))
    assert quiet[("qraft_windows_behind", ())] == 6
    assert quiet[("qraft_newest_closed_window_end_seconds", ())] == at(26).timestamp()


def test_findings_per_window_over_the_newest_ten_and_every_detected_window(runtime):
    values = collected(runtime, NEWEST_EVENT)
    assert values[("qraft_recent_findings_per_window", (("type", "anomaly"),))] == pytest.approx(3 / 10)
    assert values[("qraft_findings_per_window", (("type", "anomaly"),))] == pytest.approx(5 / 20)
    assert values[("qraft_recent_findings_per_window", (("type", "concept_drift"),))] == 0
    assert values[("qraft_findings_per_window", (("type", "concept_drift"),))] == pytest.approx(1 / 20)


def test_the_api_serves_the_pipeline_metrics_with_replays_by_status(runtime):
    response = TestClient(create_app(runtime)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert {status: values[("qraft_replays", (("status", status),))]
            for status in ("running", "succeeded", "failed", "regression")} == {
        "running": 1, "succeeded": 1, "failed": 1, "regression": 0}
    assert values[("qraft_findings_per_window", (("type", "anomaly"),))] == pytest.approx(0.25)


def test_an_empty_store_is_not_behind_and_has_no_rates(chdb_store, tmp_path):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(chdb_store, PARTITIONS, tmp_path / "replays", lambda: at(60)))
    values = samples(generate_latest(registry).decode())
    assert values[("qraft_windows_behind", ())] == 0
    assert not any(name.endswith(("findings_per_window", "window_end_seconds")) for name, _ in values)


def test_dagster_collector_counts_runs_by_status_and_divides_detection_time_by_windows_and_bars():
    instance = DagsterInstance.ephemeral()
    for status in (DagsterRunStatus.FAILURE, DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS,
                   DagsterRunStatus.STARTED):
        instance.add_run(DagsterRun(job_name="qraft", run_id=uuid.uuid4().hex, status=status))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DagsterRunsCollector(instance))
    before = samples(generate_latest(registry).decode())
    assert not any(name.startswith(("qraft_detection", "qraft_detector")) for name, _ in before)
    # The runner's metadata as the detections asset attaches it (one `run_summary` entry).
    result = {"latency_s": 3.0, "windows": 6, "rows_processed": 600,
              "detector_seconds": {"fast": 0.3, "slow": 2.4, "idle": 0.0},
              "detector_bars": {"fast": 600, "slow": 400, "idle": 0}}
    instance.report_runless_asset_event(
        AssetMaterialization("detections", metadata=run_summary(result, at(0), at(6))))
    values = samples(generate_latest(registry).decode())
    assert values[("qraft_runs_total", (("status", "failure"),))] == 2
    assert values[("qraft_runs_total", (("status", "success"),))] == 1
    assert values[("qraft_runs_total", (("status", "canceled"),))] == 0
    assert values[("qraft_runs_in_flight", (("status", "started"),))] == 1
    assert values[("qraft_runs_in_flight", (("status", "queued"),))] == 0
    assert values[("qraft_detection_seconds_per_window", ())] == 0.5
    assert values[("qraft_detection_seconds_per_bar", ())] == 0.005
    per_window = {labels: value for (name, labels), value in values.items()
                  if name == "qraft_detector_seconds_per_window"}
    assert per_window == {(("detector", "fast"),): pytest.approx(0.05), (("detector", "slow"),): pytest.approx(0.4),
                          (("detector", "idle"),): 0}
    # A detector that read no bar has no time per bar.
    per_bar = {labels: value for (name, labels), value in values.items() if name == "qraft_detector_seconds_per_bar"}
    assert per_bar == {(("detector", "fast"),): pytest.approx(0.0005), (("detector", "slow"),): pytest.approx(0.006)}


def test_dagster_collector_reads_each_detectors_time_from_a_real_detections_run(config_dir, monkeypatch):
    from dagster import AssetKey, materialize

    from qraft_core.detectors import load_detectors
    from qraft_core.detectors.runner import active_specs
    from qraft_core.lander import land_batch
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.resources import MemoryQraftResource

    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    qraft = MemoryQraftResource(config_dir=str(config_dir))
    # Three minutes of one BTCUSDT trade a second: bars for the market detectors, none for the news one.
    trades = "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade", "timestamp": at(i / 60).isoformat(),
        "ingest_time": at(i / 60).isoformat(), "meta": {"parser_version": "test/1"},
        "payload": {"s": "BTCUSDT", "p": str(100 + i % 7), "q": "0.5", "m": bool(i % 2)}}) for i in range(180))
    qraft.runtime.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", trades.encode())]).raw_events)
    defs = build_definitions(config_dir, qraft=qraft)
    instance = DagsterInstance.ephemeral()
    result = materialize([defs.resolve_assets_def(AssetKey(name)) for name in ("clean_events", "features", "detections")],
                         instance=instance, tags={"dagster/asset_partition_range_start": "2026-01-05-00:00",
                                                  "dagster/asset_partition_range_end": "2026-01-05-00:02"})
    assert result.success
    (record,) = instance.fetch_materializations(AssetKey("detections"), limit=1).records
    summary = record.asset_materialization.metadata["run_summary"].value
    # A replay adds up the run's own totals, once per ranged run (not once per partition).
    assert detections_seconds(result) == summary["detector_seconds"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DagsterRunsCollector(instance))
    values = samples(generate_latest(registry).decode())
    # The run's totals come from the same `run_summary` entry.
    assert values[("qraft_detection_seconds_per_window", ())] == pytest.approx(summary["latency_s"] / 3)
    names = [spec.name for spec in active_specs(load_detectors(config_dir)) if spec.matches("binance_spot:BTCUSDT")]
    bars = summary["rows_processed"]
    assert bars > 0 and summary["detector_bars"] == {**dict.fromkeys(summary["detector_bars"], 0),
                                                      **dict.fromkeys(names, bars)}
    assert {dict(labels)["detector"]: value for (name, labels), value in values.items()
            if name == "qraft_detector_seconds_per_bar"} == {
        name: pytest.approx(summary["detector_seconds"][name] / bars) for name in names}
    assert {dict(labels)["detector"]: value for (name, labels), value in values.items()
            if name == "qraft_detector_seconds_per_window"} == {
        name: pytest.approx(seconds / 3) for name, seconds in summary["detector_seconds"].items()}
