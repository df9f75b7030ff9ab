"""Pattern events: merging across engines, cooldown, metric changes, stable ids, storage."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from qraft_core.detectors import load_detectors
from qraft_core.detectors.base import Signal
from qraft_core.detectors.runner import detection_rows
from qraft_core.detectors.synthetic import START
from qraft_core.patterns import load_pattern_events, materialize_patterns, metric_changes
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_detectors(REPO / "config")  # merge: tolerance 120 s, cooldown 180 s, 30 context bars
MINUTE = timedelta(minutes=1)
BTC = "binance_spot:BTCUSDT"


def signal(detector: str, engine: str, seconds: float, confidence: float, stream: str = BTC,
           kind: str = "concept_drift", fields: dict[str, float] | None = None, lag: int = 0,
           onset: float | None = None) -> Signal:
    return Signal(detector, engine, f"{engine}.X", "1", stream, kind, START + timedelta(seconds=seconds), 2.0,
                  confidence, fields or {"realized_vol": 1.0}, f"before {detector}", f"after {detector}",
                  {"delta": 0.002}, lag_bars=lag,
                  onset=None if onset is None else START + timedelta(seconds=onset))


def bars() -> pl.DataFrame:
    """Flat bars, then from minute 10 volatility x2, volume x3, buy ratio +0.1, price +1%."""
    times = [START + timedelta(seconds=10 * i) for i in range(180)]
    after = [i >= 60 for i in range(180)]
    return pl.DataFrame({
        "bar_time": times,
        "stream": BTC,
        "realized_vol": [0.002 if a else 0.001 for a in after],
        "volume": [3.0 if a else 1.0 for a in after],
        "mean_size": [0.05] * 180,
        "buy_ratio": [0.6 if a else 0.5 for a in after],
        "close": [101.0 if a else 100.0 for a in after],
    }).with_columns(pl.col("bar_time").cast(pl.Datetime("ms", "UTC")))


def store_with(signals: list[Signal]) -> MemoryStore:
    store = MemoryStore()
    by_window: dict[datetime, list[Signal]] = {}
    for s in signals:
        by_window.setdefault(s.time.replace(second=0), []).append(s)
    for window, group in by_window.items():
        store.insert("detections", detection_rows(window, group))
    return store


def materialize(store: MemoryStore, start_minute: int = 0, end_minute: int = 30, minutes: int = 1) -> dict:
    return materialize_patterns(store, CONFIG, START + start_minute * MINUTE, START + end_minute * MINUTE,
                                minutes * MINUTE, load_features=lambda *_: bars())


def found(store: MemoryStore) -> list[tuple[str, str, str, list[str]]]:
    return [(e.type.value, e.timestamp.strftime("%H:%M:%S"), e.window_start.strftime("%H:%M"),
             e.details.model_extra["detectors"]) for e in load_pattern_events(store)]


def test_both_engines_on_one_change_make_one_cross_validated_event() -> None:
    store = store_with([
        signal("vol_page_hinkley", "river", 600, 0.6, fields={"realized_vol": 1.0}),
        signal("vol_cusum_moa", "capymoa", 650, 0.5, fields={"realized_vol": 0.5, "volume": 0.5}),
        signal("vol_adwin", "river", 655, 0.2),
    ])
    meta = materialize(store)
    assert meta["pattern_events"] == 1
    assert meta["cross_validated"] == 1
    (event,) = load_pattern_events(store)
    assert event.cross_validated
    assert event.timestamp == START + timedelta(seconds=600)
    assert event.window_start == START + 10 * MINUTE
    assert [a.params["detector"] for a in event.algorithms] == ["vol_adwin", "vol_cusum_moa", "vol_page_hinkley"]
    assert event.algorithm.params["detector"] == "vol_page_hinkley"
    assert event.confidence == pytest.approx(1 - 0.4 * 0.5 * 0.8)
    assert event.details.prev_state == "before vol_page_hinkley"
    assert event.details.model_extra["engines"] == ["capymoa", "river"]
    assert [(c.field, round(c.score, 4)) for c in event.explain.top_contributors] == [
        ("realized_vol", round((0.6 + 0.25 + 0.2) / 1.3, 4)), ("volume", round(0.25 / 1.3, 4))]
    assert meta["top"][0]["algorithms"] == ["river.X", "capymoa.X", "river.X"]


def test_other_stream_type_or_time_stay_separate() -> None:
    store = store_with([
        signal("a", "river", 600, 0.5),
        signal("b", "capymoa", 600, 0.5, stream="binance_spot:ETHUSDT"),
        signal("c", "river", 600, 0.5, kind="anomaly"),
        signal("d", "capymoa", 600 + 121, 0.5),
    ])
    meta = materialize(store)
    assert meta["pattern_events"] == 4
    assert meta["by_type"] == {"concept_drift": 3, "anomaly": 1, "cluster_change": 0, "freq_pattern": 0}
    assert meta["cross_validated"] == 0


def test_a_detector_repeating_itself_within_the_cooldown_is_one_finding() -> None:
    store = store_with([signal("robust", "river", 600 + 10 * i, 0.7, kind="anomaly") for i in range(6)]
                       + [signal("robust", "river", 600 + 50 + 180, 0.7, kind="anomaly")])
    meta = materialize(store)
    # Bars 0..5 repeat each other; the last one is 180 s after the previous firing: a new change.
    assert meta["pattern_events"] == 2
    assert meta["suppressed"] == {"robust": 5}


def test_metric_changes_are_measured_on_bars_around_the_change_point() -> None:
    changes, units, levels = metric_changes(bars(), START + 10 * MINUTE, START + 11 * MINUTE, 30, 10)
    assert changes == {"volatility": 1.0, "volume": 2.0, "trade_size": 0.0, "buy_ratio": 10.0, "price": 0.01}
    assert units == {"volatility": "relative", "volume": "relative", "trade_size": "relative", "buy_ratio": "pp",
                     "price": "relative"}
    assert levels["volume_before"] == 1.0 and levels["volume_after"] == 3.0
    # A drift found 12 bars late is measured from its estimated change point.
    store = store_with([signal("vol_adwin", "river", 720, 0.6, lag=12)])
    materialize(store)
    (event,) = load_pattern_events(store)
    assert event.details.metric_changes["volatility"] == 1.0
    assert event.details.model_extra["change_point"] == "2026-01-05T00:10:00.000Z"


def test_replays_reproduce_ids_and_windows_one_by_one_match_a_range() -> None:
    signals = [signal("a", "river", 55, 0.5), signal("b", "capymoa", 65, 0.5),
               signal("a", "river", 400, 0.5), signal("a", "river", 500, 0.5, kind="anomaly")]
    whole = store_with(signals)
    materialize(whole)
    stepwise = store_with(signals)
    for minute in range(30):
        materialize(stepwise, minute, minute + 1)
    first = [e.model_dump() for e in load_pattern_events(whole)]
    assert first == [e.model_dump() for e in load_pattern_events(stepwise)]
    materialize(whole, 5, 10)
    assert [e.model_dump() for e in load_pattern_events(whole)] == first
    # The signal at 65 s belongs to the finding that started at 55 s, in the previous window.
    assert [e.timestamp.second for e in load_pattern_events(whole)] == [55, 40, 20]


def test_load_pattern_events_filters() -> None:
    store = store_with([signal("a", "river", 100, 0.9), signal("b", "river", 700, 0.3, kind="anomaly",
                                                                stream="binance_spot:ETHUSDT")])
    materialize(store)
    assert [e.type.value for e in load_pattern_events(store, type="anomaly")] == ["anomaly"]
    assert [e.source_streams for e in load_pattern_events(store, stream=BTC)] == [[BTC]]
    assert len(load_pattern_events(store, min_confidence=0.5)) == 1
    assert load_pattern_events(store, START + 20 * MINUTE, START + 30 * MINUTE) == []


def test_the_earliest_evidence_dates_the_finding() -> None:
    store = store_with([signal("weak", "river", 600, 0.2, kind="anomaly"),
                        signal("strong", "capymoa", 630, 0.9, kind="anomaly")])
    materialize(store)
    (event,) = load_pattern_events(store)
    assert event.timestamp == START + timedelta(seconds=600)
    assert event.details.model_extra["first_signal"] == "2026-01-05T00:10:00.000Z"
    assert event.algorithm.params["detector"] == "strong"
    again = store_with([signal("weak", "river", 600, 0.2, kind="anomaly"),
                        signal("strong", "capymoa", 630, 0.9, kind="anomaly")])
    materialize(again, 10, 11)
    assert [e.pattern_id for e in load_pattern_events(again)] == [event.pattern_id]


def test_detectors_raising_one_change_minutes_apart_make_one_finding_dated_at_the_change() -> None:
    # A fast test raises the change at 00:10:20 (2 bars late), a slow one at 00:13:00 with its
    # onset at 00:10:10: 160 s apart, but both point at 00:10:00-00:10:10.
    signals = [signal("fast", "capymoa", 620, 0.9, lag=2), signal("slow", "qraft", 780, 0.99, onset=610)]
    by_minute, by_hour = store_with(signals), store_with(signals)
    materialize(by_minute)
    materialize(by_hour, 0, 60, minutes=60)
    # Each window decides on what it knows: minute 13 sees the finding of minute 10 and adds nothing.
    assert found(by_minute) == [("concept_drift", "00:10:00", "00:10", ["fast"])]
    assert found(by_hour) == [("concept_drift", "00:10:00", "00:00", ["fast", "slow"])]
    (event,) = load_pattern_events(by_minute)
    assert event.details.model_extra["change_point"] == "2026-01-05T00:10:00.000Z"
    assert event.details.model_extra["first_signal"] == "2026-01-05T00:10:20.000Z"
    # Metric changes around the change point: the synthetic bars step at minute 10.
    assert event.details.metric_changes["volatility"] == 1.0


def test_a_window_replayed_alone_knows_the_findings_its_signals_confirm() -> None:
    # The confirmation is raised 290 s after the first signal, pointing 29 bars back at it: a window
    # replayed alone must look back tolerance + 30 bars (420 s), more than the cooldown (180 s).
    signals = [signal("fast", "capymoa", 600, 0.5), signal("slow", "qraft", 890, 0.6, lag=29)]
    whole = store_with(signals)
    materialize(whole)
    first = [e.model_dump() for e in load_pattern_events(whole)]
    assert found(whole) == [("concept_drift", "00:10:00", "00:10", ["fast"])]
    materialize(whole, 14, 15)
    assert [e.model_dump() for e in load_pattern_events(whole)] == first
    stepwise = store_with(signals)
    for minute in range(30):
        materialize(stepwise, minute, minute + 1)
    assert [e.model_dump() for e in load_pattern_events(stepwise)] == first


def test_evidence_reaches_back_at_most_context_bars() -> None:
    # An onset 100 bars back and a lag of 50 bars are both cut to 30 bars (300 s of 10 s bars).
    store = store_with([signal("slow", "qraft", 1200, 0.6, onset=200),
                        signal("lagging", "river", 1200, 0.6, kind="anomaly", lag=50)])
    materialize(store)
    assert found(store) == [("anomaly", "00:15:00", "00:20", ["lagging"]),
                            ("concept_drift", "00:15:00", "00:20", ["slow"])]
