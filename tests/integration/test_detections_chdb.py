"""Detections and pattern events through real embedded ClickHouse: replays reproduce exactly."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.detectors import load_detectors, materialize_detections
from qraft_core.detectors.capymoa_engine import capymoa_available
from qraft_core.detectors.synthetic import START, synthetic_features
from qraft_core.patterns import load_pattern_events, materialize_patterns
from qraft_core.store import ClickHouseStore

REPO = Path(__file__).resolve().parents[2]
MINUTE = timedelta(minutes=1)
BARS = synthetic_features(n_bars=480, seed=11, vol_shift_at=240, spikes_at=(150, 330), regime_at=400,
                          news_burst_at=300, streams=("binance_spot:BTCUSDT", "binance_spot:ETHUSDT"))
WINDOWS = 80


def loader(store, start, end):  # type: ignore[no-untyped-def]
    return BARS.filter((pl.col("bar_time") >= start) & (pl.col("bar_time") < end))


def minute(n: int):  # type: ignore[no-untyped-def]
    return START + n * MINUTE


def run(store: ClickHouseStore, first: int, last: int) -> dict:
    config = load_detectors(REPO / "config")
    meta = materialize_detections(store, config, minute(first), minute(last), MINUTE, START, load_features=loader)
    materialize_patterns(store, config, minute(first), minute(last), MINUTE, load_features=loader)
    return meta


def stored(store: ClickHouseStore) -> tuple[list[tuple], list[dict]]:
    detections = store.select("detections", columns=["signal_id", "window_start", "body"], order_by=["signal_id"])
    events = [e.model_dump() for e in load_pattern_events(store)]
    return detections.rows(), events


def test_replaying_any_sub_range_reproduces_detections_and_patterns(chdb_store: ClickHouseStore) -> None:
    meta = run(chdb_store, 0, WINDOWS)
    assert meta["windows"] == WINDOWS and meta["rows_processed"] == BARS.height
    detections, events = stored(chdb_store)
    assert len(detections) == sum(meta["signals_by_detector"].values()) > 0
    kinds = {e["type"] for e in events}
    assert kinds == {"concept_drift", "anomaly", "cluster_change", "freq_pattern"}
    run(chdb_store, 33, 61)
    assert stored(chdb_store) == (detections, events)
    run(chdb_store, 33, 61)
    assert stored(chdb_store) == (detections, events)
    # Every window has its marker row; a run's last window with bars also has the state of every
    # (detector, stream): four detectors on each trade stream (three without CapyMOA) and one on the news.
    assert chdb_store.count("detector_state", start=minute(50), end=minute(51)) == {"": 1}
    for last in (60, 79):
        states = chdb_store.select("detector_state", start=minute(last), end=minute(last + 1), columns=["detector"])
        assert states.filter(pl.col("detector") != "*").height == (9 if capymoa_available() else 7)


def test_window_by_window_equals_one_range(chdb_store: ClickHouseStore, tmp_path: Path) -> None:
    run(chdb_store, 0, 20)
    whole = stored(chdb_store)
    other = ClickHouseStore(f"chdb://{tmp_path / 'second'}")
    other.migrate()
    for n in range(20):
        run(other, n, n + 1)
    assert stored(other) == whole


def test_evaluate_command_reports_per_type(config_dir: Path, tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"version": 1, "tolerance_s": 180,
                                 "window": {"start": "2026-01-05T00:00:00Z", "end": "2026-01-05T01:00:00Z"},
                                 "patterns": [{"id": "x", "type": "anomaly", "stream": "s",
                                               "time": "2026-01-05T00:10:00Z"}]}))
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stderr warns that stream "s" has no events
    assert report["detectors"]["anomaly"]["recall"] == 0.0
    assert report["baseline"]["anomaly"]["findings"] == 1
    human = CliRunner().invoke(main, ["evaluate", "--truth", str(truth)])
    assert "detectors anomaly" in human.output.replace("  ", " ")
    missing = CliRunner().invoke(main, ["evaluate", "--truth", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "ground truth file not found" in missing.output
