"""Features through the real embedded ClickHouse: range vs window by window, idempotent reruns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from qraft_core.demo import generate_demo
from qraft_core.demo.generate import clean_events_frame
from qraft_core.features import load_features, materialize_features
from qraft_core.operators import load_preprocessing
from qraft_core.store import ClickHouseStore
from qraft_core.store.base import Filter, iter_windows
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
MINUTE = timedelta(minutes=1)
# Three windows around the first planted BTC price spike (00:25:03).
START = datetime(2026, 1, 5, 0, 23, tzinfo=UTC)
END = START + 3 * MINUTE


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return clean_events_frame(generate_demo(tmp_path_factory.mktemp("demo")), START, END)


def test_range_and_window_by_window_give_identical_features(
    chdb_store: ClickHouseStore, events: pl.DataFrame
) -> None:
    config = load_preprocessing(REPO / "config")
    assert events.height > 1000
    chdb_store.insert("clean_events", events)

    meta = materialize_features(chdb_store, config, START, END, MINUTE)
    assert meta["windows"] == 3 and meta["events"] == events.height and meta["dropped_events"] == 0
    assert meta["streams"][:2] == ["binance_spot:BTCUSDT", "binance_spot:ETHUSDT"]
    in_one_call = load_features(chdb_store, START, END)
    assert in_one_call.height == meta["rows"]
    # 18 bars per trade stream in 3 minutes of 10-second bars, plus the news bars.
    assert in_one_call.filter(pl.col("stream").str.starts_with("binance_spot:")).height == 36

    chdb_store.delete("features", [Filter("stream", "!=", "")])
    assert chdb_store.count("features") == {"": 0}
    for window_start, window_end in iter_windows(START, END, MINUTE):
        materialize_features(chdb_store, config, window_start, window_end, MINUTE)
    by_window = load_features(chdb_store, START, END)
    assert_frame_equal(by_window, in_one_call, check_exact=True)

    # The same computation on the in-memory store agrees with ClickHouse.
    memory = MemoryStore()
    memory.insert("clean_events", events)
    materialize_features(memory, config, START, END, MINUTE)
    assert_frame_equal(load_features(memory, START, END), in_one_call, check_exact=True)

    # The spike bar stands out from its two minutes of trailing bars.
    spike = in_one_call.filter(
        (pl.col("stream") == "binance_spot:BTCUSDT")
        & (pl.col("bar_time") == datetime(2026, 1, 5, 0, 25, tzinfo=UTC))
    )
    assert spike["log_return_z"].item() > 8


def test_rerunning_a_range_is_idempotent(chdb_store: ClickHouseStore, events: pl.DataFrame) -> None:
    config = load_preprocessing(REPO / "config")
    chdb_store.insert("clean_events", events)
    first = materialize_features(chdb_store, config, START, END, MINUTE)
    before = load_features(chdb_store, START, END)
    with chdb_store.session():
        rows = chdb_store.count("features")
        second = materialize_features(chdb_store, config, START, END, MINUTE)
        # Recomputing the middle window alone reads the first one as history.
        materialize_features(chdb_store, config, START + MINUTE, START + 2 * MINUTE, MINUTE)
        assert chdb_store.count("features") == rows == {"": first["rows"]}
    assert second == first
    assert_frame_equal(load_features(chdb_store, START, END), before, check_exact=True)
