"""The database poller's bookkeeping of rows against a live PostgreSQL: the key read though not listed, rows
with a NULL cursor fixed and added, a table emptied and refilled while polling, many rows sharing one
cursor value."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from tests.integration.test_hostile_database import (  # noqa: F401 - pg_database is a fixture
    T,
    execute,
    outcome,
    pg_database,
    poll_once,
    source,
    sqlite,
    until,
)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The URL of a PostgreSQL database of the test's own (pg_database), dropped after it."""
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{request.getfixturevalue('pg_database')}"


def test_postgres_a_key_column_not_listed_in_columns_is_read_and_names_each_row(pg_url, tmp_path, caplog):
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz, amount int)",
            "INSERT INTO orders SELECT g, '2026-12-01 10:00+00', g * 10 FROM generate_series(1, 5) g")
    options = {"table": "orders", "cursor_column": "updated_at", "columns": ["updated_at", "amount"],
               "time_field": "updated_at"}
    events, letters, _ = poll_once(pg_url, tmp_path, key_column="id", **options)
    assert ([e["payload"] for e in events], letters) == (
        [{"updated_at": "2026-12-01T10:00:00+00:00", "amount": 10 * i, "id": i} for i in range(1, 6)], [])
    assert len({e["event_id"] for e in events}) == 5
    # A key naming no column reads nothing, and says which option is wrong.
    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.database"):
        events, letters, stats = poll_once(pg_url, tmp_path / "typo", key_column="order_id", **options)
    assert (events, letters) == ([], [])
    assert stats.errors >= 1
    assert ("source db: options.key_column: table orders has no column order_id (columns: id, updated_at, amount); "
            "retrying") in caplog.text


def letter_ids(letters: list[dict[str, Any]]) -> list[int]:
    return [json.loads(letter["raw"])["id"] for letter in letters]


def test_postgres_each_row_with_a_null_cursor_is_one_dead_letter_when_one_is_fixed_and_another_added(
        pg_url, tmp_path):
    execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY, ts timestamptz, v text)",
            "INSERT INTO t VALUES (1, '2026-12-01 10:00+00', 'ok'), (2, NULL, 'nullA'), (3, NULL, 'nullB')")
    options = {"table": "t", "cursor_column": "ts", "tiebreak_column": "id", "time_field": "ts"}
    bus = MemoryBus()

    async def run(state: Path, **keyed: Any) -> None:
        adapter = build_adapter(source(pg_url, **options, **keyed), state)
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        await until(lambda: letter_ids(outcome(bus)[1]) == [2, 3], "the first rows with a NULL cursor")
        # Row 2 is fixed and row 4 comes without a time: their count stays 2. Row 0 sorts before both.
        await asyncio.to_thread(execute, pg_url, "UPDATE t SET ts = '2026-12-01 10:05+00' WHERE id = 2",
                                "INSERT INTO t VALUES (4, NULL, 'nullC'), (0, NULL, 'nullZ')")
        await until(lambda: letter_ids(outcome(bus)[1]) == [2, 3, 0, 4], "the new rows with a NULL cursor")
        await until(lambda: [e["payload"]["id"] for e in outcome(bus)[0]] == [1, 2], "the fixed row")
        # Quiet polls and a restart dead-letter nothing again.
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 10)

    for keyed in ({"key_column": "id"}, {}):
        state = tmp_path / ("keyed" if keyed else "hashed")
        bus = MemoryBus()
        asyncio.run(run(state, **keyed))
        events, letters, _ = poll_once(pg_url, state, **options, **keyed)
        assert (events, letters) == ([], [])
        assert ([e["payload"]["id"] for e in outcome(bus)[0]], letter_ids(outcome(bus)[1])) == ([1, 2], [2, 3, 0, 4])
        execute(pg_url, "UPDATE t SET ts = NULL WHERE id = 2", "UPDATE t SET ts = '2026-12-01 10:10+00' "
                "WHERE id = 0", "UPDATE t SET ts = NULL WHERE id = 1")
        events, letters, _ = poll_once(pg_url, state, **options, **keyed)
        # Rows 1 and 2 lost their time again: each is a dead letter once more.
        assert ([e["payload"]["id"] for e in events], letter_ids(letters)) == ([0], [1, 2])
        execute(pg_url, "DELETE FROM t", "INSERT INTO t VALUES (1, '2026-12-01 10:00+00', 'ok'), (2, NULL, 'nullA'), "
                "(3, NULL, 'nullB')")


def test_a_state_file_counting_the_null_rows_keeps_them_dead_lettered_once(tmp_path):
    url = sqlite(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, seq INTEGER, at INTEGER)",
                 f"INSERT INTO t VALUES (1, 10, {T}), (2, NULL, {T}), (3, NULL, {T})")
    # An older version dead-lettered row 2 and counted it.
    (tmp_path / "db.cursor.json").write_text(json.dumps({
        "cursor": [{"kind": "plain", "value": 10}], "null_rows": 1, "table": "t", "schema_name": None,
        "cursor_column": "seq", "tiebreak_column": None}))
    events, letters, _ = poll_once(url, tmp_path, table="t", cursor_column="seq", key_column="id")
    assert (events, letter_ids(letters)) == ([], [3])
    saved = json.loads((tmp_path / "db.cursor.json").read_text())
    assert (saved["null_letters"], "null_rows" in saved) == (["2", "3"], False)
    assert poll_once(url, tmp_path, table="t", cursor_column="seq", key_column="id")[:2] == ([], [])


def test_postgres_a_table_emptied_and_refilled_while_polling_is_one_warning_each_time(pg_url, tmp_path, caplog):
    execute(pg_url, "CREATE TABLE t (id serial PRIMARY KEY, v text, at bigint)",
            "INSERT INTO t (v, at) SELECT 'old' || g, 1767571200 FROM generate_series(1, 5) g")
    adapter = build_adapter(source(pg_url, table="t"), tmp_path)
    bus = MemoryBus()
    refill = ("BEGIN; TRUNCATE t RESTART IDENTITY; INSERT INTO t (v, at) SELECT 'new' || g, 1767571200 "
              "FROM generate_series(1, 3) g; COMMIT")
    warning = (f"source db: every row of table t is before the position saved in {tmp_path / 'db.cursor.json'} "
               "(id {saved}, the table's largest 3): was the table emptied or recreated? Rows before the position "
               "are not read; move the state file away to read the table from the start")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "was the table emptied" in r.getMessage()]

    def values() -> list[str]:
        return [e["payload"]["v"] for e in outcome(bus)[0]]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        await until(lambda: len(values()) == 5, "the first rows")
        await asyncio.to_thread(execute, pg_url, refill)
        await until(lambda: len(warnings()) == 1, "the refilled table reported")
        await asyncio.sleep(0.3)  # several quiet polls: still one warning
        # Rows after the position are read; emptied and refilled again, it is said again.
        await asyncio.to_thread(execute, pg_url, "INSERT INTO t (id, v, at) VALUES (9, 'after', 1767571200)")
        await until(lambda: len(values()) == 6, "the row after the position")
        await asyncio.to_thread(execute, pg_url, refill)
        await until(lambda: len(warnings()) == 2, "the second refill reported")
        stop.set()
        await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.database"):
        asyncio.run(run())
    assert values() == ["old1", "old2", "old3", "old4", "old5", "after"]
    assert warnings() == [warning.format(saved=5), warning.format(saved=9)]


def catch_up(adapter: Any, bus: MemoryBus) -> list[int]:
    """Fetch and publish batches until the table is read up to date; the rows each query read."""
    reads: list[int] = []
    read = adapter._read

    def counted(connection: Any, query: Any) -> Any:
        rows = read(connection, query)
        reads.append(len(rows))
        return rows

    adapter._read = counted
    adapter.engine = adapter._engine()
    try:
        while True:
            with adapter._connection() as connection:
                batch = adapter._fetch(connection)
            if batch.rows:
                asyncio.run(adapter._publish_rows(bus, batch.rows))
            if batch.up_to_date:
                return reads
    finally:
        adapter.engine.dispose()


def test_postgres_rows_sharing_a_cursor_value_without_tiebreak_are_read_a_bounded_number_of_times(
        pg_url, tmp_path):
    execute(pg_url, "CREATE TABLE t (v int, ts timestamptz)",
            "INSERT INTO t SELECT g, '2026-01-05 00:00:00+00' FROM generate_series(1, 3000) g",
            "INSERT INTO t SELECT 3000 + g, '2026-01-05 00:00:01+00' FROM generate_series(1, 10) g")
    options = {"table": "t", "cursor_column": "ts", "time_field": "ts", "batch_size": 100}
    adapter = build_adapter(source(pg_url, **options), tmp_path)
    bus = MemoryBus()
    # The first batch takes in every row at its last value; the next re-reads them once.
    assert catch_up(adapter, bus) == [100, 3000, 3010]
    assert sorted(e["payload"]["v"] for e in outcome(bus)[0]) == list(range(1, 3011))
    assert len(json.loads((tmp_path / "db.cursor.json").read_text())["at_cursor"]) == 10
    # Batches ending inside values of every size, rows added at the last value: none lost or repeated.
    execute(pg_url, "INSERT INTO t SELECT 4000 + g, '2026-01-05 00:00:01+00'::timestamptz + (g / 70) * "
            "interval '1 second' FROM generate_series(0, 999) g")
    catch_up(adapter, bus)
    execute(pg_url, "INSERT INTO t SELECT 5000 + g, '2026-01-05 00:00:15+00' FROM generate_series(1, 3) g")
    catch_up(adapter, bus)
    expected = [*range(1, 3011), *range(4000, 5000), 5001, 5002, 5003]
    assert sorted(e["payload"]["v"] for e in outcome(bus)[0]) == expected
    assert len({e["event_id"] for e in outcome(bus)[0]}) == len(expected)
