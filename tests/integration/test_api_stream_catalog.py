"""The explorer's stream catalog on the embedded store gives what it gives on the in-memory one:
per stream its newest bar's columns, bars, extent and findings, from grouped queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from qraft_core.api.explorer import queries
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows

T0 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize("store_fixture", ["chdb_store", "memory_store"])
def test_the_catalog_reads_the_same_from_either_store(request: pytest.FixtureRequest, store_fixture: str) -> None:
    store = request.getfixturevalue(store_fixture)
    bars = [("a:x", 0, ["old"]), ("a:x", 2, ["mean", "max"]), ("a:x", 1, ["mid"]), ("b", 5, ["v"])]
    frame = pl.DataFrame({
        "window_start": [T0] * len(bars),
        "bar_time": [T0 + timedelta(minutes=m) for _, m, _ in bars],
        "stream": [s for s, _, _ in bars],
        "event_count": [1] * len(bars),
        "names": [n for _, _, n in bars],
        "values": [[1.0] * len(n) for _, _, n in bars],
        "items": [[] for _ in bars],
    }, schema_overrides={"items": pl.List(pl.Utf8), "bar_time": pl.Datetime("ms", "UTC"),
                         "window_start": pl.Datetime("ms", "UTC")})
    store.insert("features", frame)
    store.insert("features", frame.head(1))  # written twice: counted once
    drift, anomaly = example_patterns()[:2]
    store.insert("pattern_events", pattern_rows([
        drift.model_copy(update={"source_streams": ["a:x", "b"]}),
        anomaly.model_copy(update={"source_streams": ["a:x"]}),
    ]))
    assert queries.stream_catalog(store) == [
        {"stream": "a:x", "columns": ["mean", "max"], "bars": 3, "first_bar": "2026-01-05T00:00:00.000Z",
         "last_bar": "2026-01-05T00:02:00.000Z", "findings": 2},
        {"stream": "b", "columns": ["v"], "bars": 1, "first_bar": "2026-01-05T00:05:00.000Z",
         "last_bar": "2026-01-05T00:05:00.000Z", "findings": 1},
    ]
