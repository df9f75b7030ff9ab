"""The window runner: state carried across windows, replays, missing snapshots, restarts."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest

from qraft_core.detectors import DetectorStateMissing, load_detectors, materialize_detections
from qraft_core.detectors.base import DETECTORS, Signal, StreamDetector
from qraft_core.detectors.capymoa_engine import capymoa_available
from qraft_core.detectors.config import DetectorSpec
from qraft_core.detectors.runner import MAX_SIGNALS_PER_WINDOW
from qraft_core.detectors.synthetic import START, synthetic_features
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
MINUTE = timedelta(minutes=1)
BARS = synthetic_features(n_bars=600, seed=7, vol_shift_at=300, spikes_at=(200, 450), regime_at=400,
                          news_burst_at=350, streams=("binance_spot:BTCUSDT", "binance_spot:ETHUSDT"))
END = START + 100 * MINUTE


def loader(store, start, end):  # type: ignore[no-untyped-def]
    return BARS.filter((pl.col("bar_time") >= start) & (pl.col("bar_time") < end))


def run(store: MemoryStore, start_minute: int, end_minute: int, config=None):  # type: ignore[no-untyped-def]
    return materialize_detections(
        store, config or load_detectors(REPO / "config"), START + start_minute * MINUTE,
        START + end_minute * MINUTE, MINUTE, START, load_features=loader,
    )


def detections(store: MemoryStore, start_minute: int = 0, end_minute: int = 100) -> list[tuple]:
    rows = store.select("detections", start=START + start_minute * MINUTE, end=START + end_minute * MINUTE)
    return sorted(rows.select("signal_id", "window_start", "detector", "stream", "score", "body").rows())


def test_one_run_equals_two_consecutive_runs() -> None:
    whole, split = MemoryStore(), MemoryStore()
    meta = run(whole, 0, 100)
    run(split, 0, 37)
    run(split, 37, 100)
    assert detections(whole) == detections(split)
    assert meta["windows"] == 100
    assert meta["rows_processed"] == BARS.height
    assert meta["events_processed"] == BARS["event_count"].sum()
    assert meta["engines"] == (["capymoa", "qraft", "river"] if capymoa_available() else ["qraft", "river"])
    assert sum(meta["signals_by_detector"].values()) == len(detections(whole))
    assert meta["signals_by_detector"]["news_itemsets"] == 1
    assert meta["signals_by_detector"]["vol_drift"] == 2  # the volatility step at bar 300, on each stream
    final = START + 99 * MINUTE
    # Pickled bytes may differ in layout; what must match is which states exist and for which config.
    keys = ["detector", "stream", "config_hash"]
    assert whole.select("detector_state", start=final, end=END, columns=keys).sort(keys).rows() == \
        split.select("detector_state", start=final, end=END, columns=keys).sort(keys).rows()


def test_replaying_a_sub_range_reproduces_it_exactly() -> None:
    store = MemoryStore()
    run(store, 0, 100)
    before = detections(store)
    run(store, 45, 70)
    assert detections(store) == before
    run(store, 45, 70)
    assert store.count("detections") == {"": len(before)}


def test_a_backfill_needs_the_previous_windows_state() -> None:
    with pytest.raises(DetectorStateMissing, match="no detector state stored for window 2026-01-05T00:09:00.000Z"):
        run(MemoryStore(), 10, 20)


def test_a_window_without_bars_still_leaves_a_snapshot() -> None:
    store = MemoryStore()
    materialize_detections(store, load_detectors(REPO / "config"), START, START + MINUTE, MINUTE, START,
                           load_features=lambda *_: BARS.clear())
    assert store.count("detector_state") == {"": 1}
    run(store, 1, 3)
    assert store.count("detections", start=START, end=START + 3 * MINUTE) == {"": 0}


def test_a_changed_detector_restarts_fresh_and_says_so() -> None:
    store = MemoryStore()
    run(store, 0, 50)
    config = load_detectors(REPO / "config")
    changed = config.model_copy(
        update={"detectors": [d.model_copy(update={"seed": 1}) if d.name == "regime_dbstream" else d
                              for d in config.detectors]}
    )
    meta = run(store, 50, 60, changed)
    assert meta["restarted"] == ["regime_dbstream"]


def test_windows_without_bars_need_no_snapshot_of_their_own() -> None:
    # The bars stop after minute 100; windows 100-129 were never materialized.
    continuous, gapped = MemoryStore(), MemoryStore()
    run(continuous, 0, 140)
    run(gapped, 0, 100)
    run(gapped, 130, 140)
    assert detections(gapped, 0, 140) == detections(continuous, 0, 140)
    # Nothing at all before a window without bars: a fresh start is the exact state.
    empty = MemoryStore()
    materialize_detections(empty, load_detectors(REPO / "config"), START + 500 * MINUTE, START + 501 * MINUTE,
                           MINUTE, START, load_features=lambda *_: BARS.clear())
    assert empty.count("detector_state") == {"": 1}


def test_finding_times_do_not_depend_on_the_window_length() -> None:
    """The same seeded stream, run and merged in 1-minute and in 60-minute windows, gives the same
    signals (times and onsets) and the same pattern events, each dated as its evidence supports."""
    import numpy as np

    from qraft_core.detectors import load_default_detectors, load_signals
    from qraft_core.patterns.materialize import load_pattern_events, materialize_patterns

    rng = np.random.default_rng(4)
    values = rng.normal(50.0, 2.0, 1440)
    values[500] += 25.0  # a spike at 01:23:20
    values[900:] += 10.0  # a level shift at 02:30:00
    values[1203] -= 25.0  # a dip at 03:20:30
    bars = pl.DataFrame({"bar_time": [START + i * timedelta(seconds=10) for i in range(1440)], "stream": "cpu",
                         "event_count": 1, "value_mean": values, "value_min": values, "value_max": values})
    config = load_default_detectors()

    def bars_between(store, start, end):  # type: ignore[no-untyped-def]
        return bars.filter((pl.col("bar_time") >= start) & (pl.col("bar_time") < end))

    found = {}
    for minutes in (1, 60):
        store, interval, end = MemoryStore(), timedelta(minutes=minutes), START + timedelta(hours=4)
        materialize_detections(store, config, START, end, interval, START, load_features=bars_between)
        materialize_patterns(store, config, START, end, interval, load_features=bars_between)
        signals = [(s.detector, s.time, s.finding_time) for s in load_signals(store, START, end)]
        events = [(e.type.value, e.timestamp, e.details.model_extra["change_point"])
                  for e in load_pattern_events(store, START, end)]
        found[minutes] = (signals, events)
    assert found[1] == found[60]
    signals, _ = found[1]
    assert [(name, onset.strftime("%H:%M:%S")) for name, _, onset in signals] == [
        ("spikes_and_dips", "01:23:20"), ("level_drift", "02:30:00"), ("spikes_and_dips", "03:20:30")]


def snapshot_windows(store: MemoryStore) -> list[int]:
    rows = store.select("detector_state", columns=["window_start", "detector"]).filter(pl.col("detector") != "*")
    return sorted({int((w - START) / MINUTE) for w in rows["window_start"].to_list()})


def test_state_is_snapshot_now_and_then_and_resuming_from_any_snapshot_is_exact(monkeypatch) -> None:
    import qraft_core.detectors.runner as runner

    # Each trade stream has 6 bars a minute: a snapshot every 5 minutes, and after the last window with bars.
    monkeypatch.setattr(runner, "SNAPSHOT_EVERY_BARS", 30)
    continuous = MemoryStore()
    run(continuous, 0, 120)
    assert snapshot_windows(continuous) == list(range(4, 100, 5))
    # Every window has its marker; the windows without bars (100-119) have nothing else.
    assert continuous.count("detector_state", start=START + 100 * MINUTE, end=START + 120 * MINUTE) == {"": 20}
    reference, states = detections(continuous), snapshot_windows(continuous)
    # A run also leaves a snapshot after its last window with bars, so the next run replays nothing.
    pieces = MemoryStore()
    replayed = [run(pieces, start, end)["replayed_bars"] for start, end in ((0, 5), (5, 12), (12, 13), (13, 120))]
    assert replayed == [0, 0, 0, 0]
    assert detections(pieces) == reference
    assert snapshot_windows(pieces) == [4, 9, 11, 12, *range(17, 100, 5), 99]
    # A re-run in the middle resumes from the snapshot of minute 39 and replays minutes 40 and 41.
    meta = run(continuous, 42, 61)
    assert meta["replayed_bars"] == BARS.filter(pl.col("bar_time").is_between(
        START + 40 * MINUTE, START + 42 * MINUTE, closed="left")).height > 2 * 12
    assert detections(continuous) == reference and snapshot_windows(continuous) == sorted({*states, 60})


def test_a_detector_raising_on_a_streams_bars_is_counted_and_the_rest_goes_on(monkeypatch) -> None:
    from qraft_core.detectors.calibrated import CalibratedAnomaly

    clean_store, store = MemoryStore(), MemoryStore()
    run(clean_store, 0, 60)
    poisoned = START + 30 * MINUTE
    original = CalibratedAnomaly.update

    def overflow_on_one_window(self, bars):  # type: ignore[no-untyped-def]
        if self.stream == "binance_spot:ETHUSDT" and bars["bar_time"].min() <= poisoned < bars["bar_time"].max():
            raise OverflowError("(34, 'Numerical result out of range')")
        return original(self, bars)

    monkeypatch.setattr(CalibratedAnomaly, "update", overflow_on_one_window)
    meta = run(store, 0, 60)
    assert {name: n for name, n in meta["detector_failures"].items() if n} == {"bar_anomaly": 1}
    assert meta["detector_first_failure"] == {
        "bar_anomaly": "binance_spot:ETHUSDT in window 2026-01-05T00:30:00.000Z: OverflowError: (34, 'Numerical result out of range')"
    }
    # Every other detector, and the failing one on the other stream, found exactly what they find anyway.
    untouched = [r for r in detections(clean_store, 0, 60) if not (r[2] == "bar_anomaly" and "ETH" in r[3])]
    assert [r for r in detections(store, 0, 60) if not (r[2] == "bar_anomaly" and "ETH" in r[3])] == untouched


POISONED = START + 30 * MINUTE


class Hostile(StreamDetector):
    """A user's detector that misbehaves, as `mode` says, on ETHUSDT's bars of minute 30."""

    engine: ClassVar[str] = "qraft"
    kind: ClassVar[str] = "anomaly"
    defaults: ClassVar[dict[str, Any]] = {"mode": "none", "n": 0}

    def _fresh_state(self) -> Any:
        if self.param("mode") == "build" and "ETH" in self.stream:
            raise ValueError("cannot build on ETHUSDT")
        return {"broken": False}

    def get_state(self) -> bytes | dict[str, Any]:
        if self.state["broken"]:
            raise RuntimeError("state unreadable")
        return super().get_state()

    def update(self, rows: pl.DataFrame) -> list[Signal]:
        mode = self.param("mode")
        if mode == "mutate":  # on every stream and window: renames the columns of the frame it is given
            rows.columns = [f"{c}_x" for c in rows.columns]
            return []
        if "ETH" not in self.stream or POISONED not in rows["bar_time"].to_list():
            return []
        made = {"signal_inf": lambda: self.signal(POISONED, math.inf, 0.5, {"log_return": 1.0}, "a", "b"),
                "nan": lambda: replace(self.signal(POISONED, 1.0, 0.5, {"log_return": 1.0}, "a", "b"), score=math.nan),
                "future": lambda: self.signal(POISONED + timedelta(days=10), 1.0, 0.5, {"log_return": 1.0}, "a", "b"),
                "not_signal": lambda: {"time": POISONED}}
        if mode == "getstate":
            self.state["broken"] = True
        if mode == "many":
            return [self.signal(POISONED, 1.0, 0.5, {"log_return": 1.0}, "a", "b", group=f"g{i}")
                    for i in range(self.param("n"))]
        return [made[mode]()] if mode in made else []


def hostile_run(monkeypatch, mode: str, **params: Any) -> tuple[dict[str, Any], MemoryStore]:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(DETECTORS._items, "qraft/Hostile", Hostile)
    config = load_detectors(REPO / "config")
    spec = DetectorSpec(name="hostile", engine="qraft", algorithm="Hostile", kind="anomaly",
                        features=["log_return"], streams=["binance_spot:*"], params={"mode": mode, **params})
    # First, so a detector it harmed would come after it on the same stream.
    config = config.model_copy(update={"detectors": [spec, *config.detectors]})
    store = MemoryStore()
    return run(store, 0, 60, config), store


def others(store: MemoryStore) -> list[tuple]:
    return [r for r in detections(store, 0, 60) if r[2] != "hostile"]


@pytest.mark.parametrize(("mode", "error"), [
    ("signal_inf", "ValueError: detector hostile: signal score must be a finite number (got inf)"),
    ("nan", "DetectorOutputError: detector hostile returned a signal whose score is nan, not a finite number"),
    ("future", "DetectorOutputError: detector hostile returned a signal dated 2026-01-15T00:30:00.000Z, outside "
               "its window [2026-01-05T00:30:00.000Z, 2026-01-05T00:31:00.000Z)"),
    ("not_signal", "DetectorOutputError: detector hostile returned a dict, not a Signal"),
    ("getstate", "RuntimeError: state unreadable"),
])
def test_a_detector_returning_unusable_signals_fails_alone_on_its_stream(monkeypatch, mode: str, error: str) -> None:
    clean = MemoryStore()
    run(clean, 0, 60)
    meta, store = hostile_run(monkeypatch, mode)
    window = "2026-01-05T00:59:00.000Z" if mode == "getstate" else "2026-01-05T00:30:00.000Z"  # its next snapshot
    assert meta["detector_failures"]["hostile"] == 1
    assert meta["detector_first_failure"] == {"hostile": f"binance_spot:ETHUSDT in window {window}: {error}"}
    assert [r for r in detections(store, 0, 60) if r[2] == "hostile"] == []
    assert others(store) == others(clean)


def test_a_detector_that_cannot_be_built_on_one_stream_fails_there_alone(monkeypatch) -> None:
    clean = MemoryStore()
    run(clean, 0, 60)
    meta, store = hostile_run(monkeypatch, "build")
    assert meta["detector_failures"]["hostile"] == 60  # tried again in every window
    assert meta["detector_first_failure"] == {
        "hostile": "binance_spot:ETHUSDT in window 2026-01-05T00:00:00.000Z: ValueError: cannot build on ETHUSDT"}
    assert others(store) == others(clean)


def test_a_detector_changing_its_input_frame_does_not_change_what_the_others_read(monkeypatch) -> None:
    clean = MemoryStore()
    run(clean, 0, 60)
    meta, store = hostile_run(monkeypatch, "mutate")
    assert sum(meta["detector_failures"].values()) == 0
    assert others(store) == others(clean)


def test_signals_beyond_the_bound_per_window_are_counted_not_stored(monkeypatch) -> None:
    meta, store = hostile_run(monkeypatch, "many", n=MAX_SIGNALS_PER_WINDOW + 5)
    assert meta["signals_by_detector"]["hostile"] == MAX_SIGNALS_PER_WINDOW
    assert meta["detector_signals_dropped"]["hostile"] == 5
    assert len([r for r in detections(store, 0, 60) if r[2] == "hostile"]) == MAX_SIGNALS_PER_WINDOW
