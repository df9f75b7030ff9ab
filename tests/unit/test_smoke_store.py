from datetime import UTC, datetime

import polars as pl

from qraft_core.store.base import Filter


def test_replace_window_is_idempotent_on_chdb(chdb_store):
    start, end = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 5, 0, 1, tzinfo=UTC)
    frame = pl.DataFrame({
        "event_id": ["a", "b"], "source": ["s", "s"], "type": ["t", "t"],
        "timestamp": [start, start], "ingest_time": [start, start], "window_start": [start, start],
        "payload": ["{}", "{}"], "repaired": [0, 0],
    })
    for _ in range(2):
        chdb_store.replace_window("clean_events", start, end, frame)
    assert chdb_store.count("clean_events") == {"": 2}
    assert chdb_store.select("clean_events", where=[Filter("event_id", "=", "b")])["event_id"].to_list() == ["b"]
