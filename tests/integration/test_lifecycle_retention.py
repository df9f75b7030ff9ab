"""Retention TTLs and the migration lock on real embedded ClickHouse (chDB)."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from qraft_core.store import StoreLayout, StoreUnavailable, open_store
from qraft_core.store.cluster import migration_lock

NOW = datetime.now(UTC).replace(microsecond=0)


def _raw(rows: list[tuple[str, str, datetime]]) -> pl.DataFrame:
    return pl.DataFrame({
        "event_id": [r[0] for r in rows], "source": [r[1] for r in rows], "type": ["t"] * len(rows),
        "timestamp": [r[2] for r in rows], "ingest_time": [r[2] for r in rows], "landed_at": [r[2] for r in rows],
        "payload": ["{}"] * len(rows), "parser_version": ["v"] * len(rows), "raw_checksum": [""] * len(rows),
    })


def test_rows_past_their_table_or_source_retention_are_deleted_at_merge(tmp_path):
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    # An existing store without retention, then the setting turned on: the TTL applies on migrate.
    open_store(dsn)
    store = open_store(dsn, layout=StoreLayout(retention_days={"raw_events": 30}, source_retention_days={"news": 7}))
    store.insert("raw_events", _raw([
        ("old-trade", "binance_spot", NOW - timedelta(days=40)),
        ("recent-trade", "binance_spot", NOW - timedelta(days=10)),
        ("old-news", "news", NOW - timedelta(days=8)),
        ("new-news", "news", NOW - timedelta(days=1)),
    ]))
    with store._client_in_session() as client:
        create = client.query("SHOW CREATE TABLE raw_events").result_rows[0][0]
        client.command("OPTIMIZE TABLE raw_events FINAL")
    assert "TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 30))" in create
    kept = store.select("raw_events", columns=["event_id"], order_by=["event_id"])["event_id"].to_list()
    assert kept == ["new-news", "recent-trade"]


def test_the_migration_lock_admits_one_process_and_names_the_table_to_others(tmp_path):
    store = open_store(f"chdb://{tmp_path / 'clickhouse'}")
    layout = StoreLayout()
    with store._client_in_session() as client:
        with migration_lock(client, layout, timeout_s=5), pytest.raises(
            StoreUnavailable, match="migration lock \\(table qraft_migration_lock\\)"
        ), migration_lock(client, layout, timeout_s=0.5, poll_s=0.1):
            pass
        # Released: the next process takes it at once.
        with migration_lock(client, layout, timeout_s=0.5):
            tables = client.query("SELECT name FROM system.tables WHERE name = 'qraft_migration_lock'").result_rows
    assert tables == [("qraft_migration_lock",)]
