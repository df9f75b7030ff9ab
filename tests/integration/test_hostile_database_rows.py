"""The database poller's bookkeeping of rows against a live PostgreSQL: the key read though not listed, rows
with a NULL cursor fixed and added, a table emptied and refilled while polling, many rows sharing one
cursor value."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from tests.integration.test_hostile_database import (  # noqa: F401 - pg_database is a fixture
    execute,
    outcome,
    pg_database,
    poll_once,
    source,
    until,
)


def pg_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def test_postgres_a_key_column_not_listed_in_columns_is_read_and_names_each_row(pg_database, tmp_path, caplog):
    url = pg_url(pg_database)
    execute(url, "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz, amount int)",
            "INSERT INTO orders SELECT g, '2026-12-01 10:00+00', g * 10 FROM generate_series(1, 5) g")
    options = {"table": "orders", "cursor_column": "updated_at", "columns": ["updated_at", "amount"],
               "time_field": "updated_at"}
    events, letters, _ = poll_once(url, tmp_path, key_column="id", **options)
    assert ([e["payload"] for e in events], letters) == (
        [{"updated_at": "2026-12-01T10:00:00+00:00", "amount": 10 * i, "id": i} for i in range(1, 6)], [])
    assert len({e["event_id"] for e in events}) == 5
    # A key naming no column reads nothing, and says which option is wrong.
    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.database"):
        events, letters, stats = poll_once(url, tmp_path / "typo", key_column="order_id", **options)
    assert (events, letters) == ([], [])
    assert stats.errors >= 1
    assert ("source db: options.key_column: table orders has no column order_id (columns: id, updated_at, amount); "
            "retrying") in caplog.text
