"""A stored detector state that does not load restarts that detector fresh instead of blocking every window."""

from __future__ import annotations

import logging

import polars as pl
import pytest

from qraft_core.detectors.base import encode_state
from qraft_core.detectors.runner import latest_snapshot
from qraft_core.store.base import Filter
from qraft_core.store.fake import MemoryStore
from tests.unit.test_detectors_runner import MINUTE, START, detections, run

SNAPSHOT = START + 39 * MINUTE
PICKLED = pl.col("state").str.starts_with("pickle:")


def stored_states(store: MemoryStore) -> pl.DataFrame:
    return store.select("detector_state", start=SNAPSHOT, end=SNAPSHOT + MINUTE)


def replace_states(store: MemoryStore, states: pl.DataFrame) -> None:
    store.delete("detector_state", [Filter("window_start", "=", SNAPSHOT)])
    store.insert("detector_state", states)


def test_a_state_that_does_not_unpickle_restarts_its_detector_fresh(caplog: pytest.LogCaptureFixture) -> None:
    damaged, fresh = MemoryStore(), MemoryStore()
    for store in (damaged, fresh):
        run(store, 0, 40)
    assert latest_snapshot(damaged, START + 40 * MINUTE) == SNAPSHOT
    states = stored_states(damaged)
    assert states.filter(PICKLED).select("detector", "stream").sort("detector", "stream").rows() == [
        ("bar_anomaly", "binance_spot:BTCUSDT"), ("bar_anomaly", "binance_spot:ETHUSDT"),
        ("news_itemsets", "news"),
        ("regime_dbstream", "binance_spot:BTCUSDT"), ("regime_dbstream", "binance_spot:ETHUSDT"),
        ("vol_drift", "binance_spot:BTCUSDT"), ("vol_drift", "binance_spot:ETHUSDT"),
    ]
    # Damaged: the pickles of vol_drift on BTCUSDT and of news_itemsets. Fresh: those rows are gone,
    # which is how a detector that never ran starts.
    hit = PICKLED & (((pl.col("detector") == "vol_drift") & (pl.col("stream") == "binance_spot:BTCUSDT"))
                     | (pl.col("detector") == "news_itemsets"))
    replace_states(damaged, states.with_columns(
        pl.when(hit).then(pl.lit(encode_state(b"not a pickle"))).otherwise(pl.col("state")).alias("state")))
    replace_states(fresh, states.filter(~hit))

    with caplog.at_level(logging.WARNING, logger="qraft_core.detectors.runner"):
        meta = run(damaged, 40, 80)
    assert meta["restarted"] == ["news_itemsets", "vol_drift"]
    assert [r.getMessage() for r in caplog.records] == [
        f"detector {name}: its state on {stream} after 2026-01-05T00:39:00.000Z does not load "
        "(UnpicklingError: invalid load key, 'n'.); it restarts there from a fresh state"
        for name, stream in (("news_itemsets", "news"), ("vol_drift", "binance_spot:BTCUSDT"))
    ]
    assert run(fresh, 40, 80)["restarted"] == []
    assert detections(damaged, 40, 80) == detections(fresh, 40, 80)
    # Uninterrupted, vol_drift finds the volatility step on both streams; started fresh on BTCUSDT at
    # minute 40 it has too short a history there, and finds it on ETHUSDT only (at minute 50; 51 before
    # the level tests' least-squares jump, which accepts the step a bar sooner).
    assert [(row[1], row[2], row[3]) for row in detections(damaged, 40, 80) if row[2] == "vol_drift"] == [
        (START + 50 * MINUTE, "vol_drift", "binance_spot:ETHUSDT")]
    assert meta["signals_by_detector"]["news_itemsets"] == 1
    # The next run resumes from the new snapshot and restarts nothing.
    caplog.clear()
    assert run(damaged, 80, 90)["restarted"] == []
    assert caplog.records == []
