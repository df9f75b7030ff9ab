"""Each detector's time and bars in the runner's metadata: the run's own bars, replays excluded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from qraft_core.detectors import load_detectors, materialize_detections
from qraft_core.detectors.runner import active_specs
from qraft_core.detectors.synthetic import START, synthetic_features
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
MINUTE = timedelta(minutes=1)
BARS = synthetic_features(n_bars=300, seed=11, spikes_at=(120,), news_burst_at=200,
                          streams=("binance_spot:BTCUSDT", "binance_spot:ETHUSDT"))
CONFIG = load_detectors(REPO / "config")


def loader(store, start, end):  # type: ignore[no-untyped-def]
    return BARS.filter((pl.col("bar_time") >= start) & (pl.col("bar_time") < end))


def run(store: MemoryStore, start_minute: int, end_minute: int):  # type: ignore[no-untyped-def]
    return materialize_detections(store, CONFIG, START + start_minute * MINUTE, START + end_minute * MINUTE,
                                  MINUTE, START, load_features=loader)


def bars_from(minute: int) -> pl.DataFrame:
    return BARS.filter(pl.col("bar_time") >= START + minute * MINUTE)


def expected_bars(minute: int) -> dict[str, int]:
    """Each configured detector reads the bars of the streams it matches from `minute` on."""
    per_stream = dict(bars_from(minute).group_by("stream").len().rows())
    return {spec.name: sum(n for stream, n in per_stream.items() if spec.matches(stream))
            for spec in active_specs(CONFIG)}


def test_every_detector_reports_the_bars_it_read_and_its_seconds():
    meta = run(MemoryStore(), 0, 60)
    assert meta["detector_bars"] == expected_bars(0)
    assert set(meta["detector_seconds"]) == set(meta["detector_bars"]) == set(meta["signals_by_detector"])
    assert all(seconds > 0 for seconds in meta["detector_seconds"].values())
    # Part of the run's wall time: the rest is loading bars and writing rows and snapshots.
    assert sum(meta["detector_seconds"].values()) <= meta["latency_s"]


def test_a_backfill_counts_its_own_windows_not_the_bars_replayed_to_reach_them():
    store = MemoryStore()
    run(store, 0, 60)
    backfill = run(store, 20, 60)
    assert backfill["replayed_bars"] == BARS.height - bars_from(20).height
    assert backfill["detector_bars"] == expected_bars(20)
