"""The database poller against hostile tables and a database that goes away: NULL and mixed-type
cursors, NUL bytes, NaN and infinity, tables and columns dropped while polling, connections cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import ConfigError, SourceConfig

T = 1767571200


def outcome(bus: MemoryBus) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return bus.published()


async def until(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def source(url: str, **options: Any) -> SourceConfig:
    return SourceConfig(name="db", type="database", endpoint=url, options={
        "interval_s": 0.05, "backoff_initial_s": 0.02, "backoff_max_s": 0.1, "time_field": "at",
        "timeout_s": 2, **options})


def poll_once(url: str, state: Path, **options: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """Run the poller until it has read the table up to date (two quiet polls), then stop it."""
    adapter = build_adapter(source(url, **options), state)
    bus = MemoryBus()
    polls = {"up_to_date": 0}
    fetch = adapter._fetch

    def counted_fetch(*args: Any) -> Any:
        batch = fetch(*args)
        polls["up_to_date"] += batch.up_to_date
        return batch

    adapter._fetch = counted_fetch

    async def run() -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        # The second poll that found the table read up to date began after the first one's rows
        # (and the rows without a cursor it looked for) were published; a table that cannot be
        # read at all shows as failed queries instead.
        await until(lambda: polls["up_to_date"] >= 2 or adapter.stats.errors >= 2 or task.done(), "two quiet polls")
        stop.set()
        return await asyncio.wait_for(task, 10)

    stats = asyncio.run(run())
    events, letters = outcome(bus)
    return events, letters, stats


def sqlite(tmp_path: Path, *statements: str) -> str:
    url = f"sqlite:///{tmp_path / 'feed.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()
    return url


def test_rows_with_a_null_cursor_are_dead_letters_once_and_never_stop_the_reading(tmp_path):
    url = sqlite(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, seq INTEGER, at INTEGER)",
                 f"INSERT INTO t VALUES (1, 10, {T}), (2, NULL, {T}), (3, 20, {T}), (4, NULL, {T})")
    events, letters, _ = poll_once(url, tmp_path, table="t", cursor_column="seq", key_column="id")
    assert [e["payload"]["id"] for e in events] == [1, 3]
    reason = "row has NULL in the cursor column(s) seq, so it cannot be read in cursor order"
    assert [(letter["reason"], json.loads(letter["raw"])["id"]) for letter in letters] == [(reason, 2), (reason, 4)]
    # Restarted: nothing again; new rows, with and without a cursor, are read.
    sqlite(tmp_path, f"INSERT INTO t VALUES (5, 30, {T}), (6, NULL, {T})")
    events, letters, _ = poll_once(url, tmp_path, table="t", cursor_column="seq", key_column="id")
    assert ([e["payload"]["id"] for e in events], [json.loads(x["raw"])["id"] for x in letters]) == ([5], [6])


def test_a_cursor_column_of_mixed_types_is_read_in_the_database_order(tmp_path):
    # SQLite orders integers before text before blobs; typed reading would fail on 'garbage'.
    url = sqlite(tmp_path, "CREATE TABLE t (id INTEGER, stamp DATETIME, at INTEGER)",
                 f"INSERT INTO t VALUES (1, '2026-01-05 00:00:00', {T}), (2, 42, {T}), (3, 'garbage', {T}), "
                 f"(4, x'00ff', {T})")
    events, letters, stats = poll_once(url, tmp_path, table="t", cursor_column="stamp", key_column="id")
    assert ([e["payload"]["id"] for e in events], letters) == ([2, 1, 3, 4], [])
    assert events[3]["payload"]["stamp"] == "AP8="  # a blob is carried as base64
    assert stats.errors == 0
    saved = json.loads((tmp_path / "db.cursor.json").read_text())
    assert saved["cursor"] == [{"kind": "bytes", "value": "AP8="}]
    assert poll_once(url, tmp_path, table="t", cursor_column="stamp", key_column="id")[:2] == ([], [])


def test_nul_bytes_and_infinities_in_sqlite_cost_only_their_row(tmp_path):
    url = sqlite(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL, s TEXT, at INTEGER)",
                 f"INSERT INTO t VALUES (1, 9e999, 'a', {T}), (2, -9e999, 'b', {T}), "
                 f"(3, 1.5, 'x' || char(0) || 'y', {T}), (4, 2.5, 'ok', {T})")
    events, letters, _ = poll_once(url, tmp_path, table="t")
    assert [(e["payload"]["id"], e["payload"]["s"]) for e in events] == [(3, "x\x00y"), (4, "ok")]
    prefix = "invalid event: 1 validation error for StandardEvent; payload;   Value error, payload.v holds "
    assert [letter["reason"].split(" [type")[0] for letter in letters] == [
        prefix + "a non-finite number (inf)", prefix + "a non-finite number (-inf)"]


# PostgreSQL: a database of the test's own, reached directly or through a proxy that can be cut.

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_database() -> Iterator[str]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    name = f"qraft_hostile_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield name
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


class Proxy:
    """A TCP proxy to PostgreSQL on a fixed port that can be taken down (connections cut,
    new ones refused) and brought back, or frozen: bytes held, nothing said (a silent network)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.frozen = threading.Event()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
            listener, self.listener = self.listener, None
        for sock in [*sockets, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.02)
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_postgres_nan_infinity_and_nul_bytes_cost_only_their_row(pg_database, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, n numeric, f float8, b bytea, at bigint)",
            f"INSERT INTO t (n, f, b, at) VALUES ('NaN', 1, '\\x00', {T}), (1, 'Infinity', '\\x00', {T}), "
            f"(2, '-Infinity', '\\x00', {T}), (3, 3, '\\x610062', {T})")
    events, letters, stats = poll_once(url, tmp_path, table="t")
    assert [(e["payload"]["id"], e["payload"]["b"]) for e in events] == [(4, "YQBi")]
    assert len(letters) == 3 and all(("nan" in x["reason"] or "inf" in x["reason"]) for x in letters)
    assert stats.errors == 0


def test_postgres_values_python_cannot_hold_are_read_as_text_and_the_reading_goes_on(pg_database, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, d timestamptz, day date, at bigint)",
            f"INSERT INTO t (d, day, at) VALUES ('2026-01-05 00:00:00+00', '2026-01-05', {T}), "
            f"('infinity', '0044-03-15 BC', {T})")
    events, letters, stats = poll_once(url, tmp_path, table="t")
    assert [(e["payload"]["id"], e["payload"]["d"], e["payload"]["day"]) for e in events] == [
        (1, "2026-01-05 00:00:00+00", "2026-01-05"), (2, "infinity", "0044-03-15 BC")]
    assert letters == [] and stats.errors == 1
    execute(url, f"INSERT INTO t (d, day, at) VALUES ('2026-01-06 00:00:00+00', '2026-01-06', {T})")
    events, letters, stats = poll_once(url, tmp_path, table="t")
    assert [(e["payload"]["id"], e["payload"]["d"]) for e in events] == [(3, "2026-01-06T00:00:00+00:00")]
    # The same in a row without a cursor: its dead letter carries the text (the other columns of
    # the batch are read as text too).
    execute(url, "ALTER TABLE t ADD COLUMN seq int", "UPDATE t SET seq = id",
            f"INSERT INTO t (d, day, at) VALUES ('-infinity', '2026-01-05', {T})")
    events, letters, _ = poll_once(url, tmp_path / "seq", table="t", cursor_column="seq", key_column="id")
    assert [e["payload"]["id"] for e in events] == ["1", "2", "3"]
    assert [(json.loads(x["raw"])["id"], json.loads(x["raw"])["d"]) for x in letters] == [("4", "-infinity")]


def test_postgres_going_away_dropping_the_table_and_a_column_is_retried_and_nothing_is_lost(pg_database, tmp_path):
    direct = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    proxy = Proxy(("127.0.0.1", 5432))
    proxy.up()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_database}"
    execute(direct, "CREATE TABLE t (id serial PRIMARY KEY, v int, at bigint)",
            f"INSERT INTO t (v, at) VALUES (1, {T}), (2, {T})")
    adapter = build_adapter(source(url, table="t", columns=["id", "v", "at"]), tmp_path)
    bus = MemoryBus()

    def ids() -> list[int]:
        return [e["payload"]["id"] for e in outcome(bus)[0]]

    async def run() -> list[str]:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        await until(lambda: ids() == [1, 2], "the first rows")
        steps = []
        proxy.down()
        await asyncio.to_thread(execute, direct, f"INSERT INTO t (v, at) VALUES (3, {T})")
        errors = adapter.stats.errors
        await until(lambda: adapter.stats.errors >= errors + 2, "retries while the database is away")
        proxy.up()
        await until(lambda: ids() == [1, 2, 3], "the row written while away")
        steps.append("back")
        await asyncio.to_thread(execute, direct, "ALTER TABLE t DROP COLUMN v")
        errors = adapter.stats.errors
        await until(lambda: adapter.stats.errors > errors, "the missing column reported")
        await asyncio.to_thread(execute, direct, "ALTER TABLE t ADD COLUMN v int",
                                f"INSERT INTO t (v, at) VALUES (4, {T})")
        await until(lambda: ids() == [1, 2, 3, 4], "the row after the column came back")
        steps.append("column")
        await asyncio.to_thread(execute, direct, "DROP TABLE t")
        errors = adapter.stats.errors
        await until(lambda: adapter.stats.errors > errors, "the missing table reported")
        await asyncio.to_thread(execute, direct, "CREATE TABLE t (id int PRIMARY KEY, v int, at bigint)",
                                f"INSERT INTO t VALUES (5, 5, {T})")
        await until(lambda: ids() == [1, 2, 3, 4, 5], "the row of the recreated table")
        steps.append("table")
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 10)
        return steps

    try:
        assert asyncio.run(run()) == ["back", "column", "table"]
    finally:
        proxy.down()
    assert outcome(bus)[1] == []


def test_postgres_uuid_addresses_ranges_and_exact_numerics_become_json(pg_database, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, u uuid, us uuid[], ip inet, net cidr, r int4range, "
                 "tr tstzrange, e int4range, big numeric(30, 4), huge numeric, small numeric, at bigint)",
            "INSERT INTO t (u, us, ip, net, r, tr, e, big, huge, small, at) VALUES ("
            "'00000000-0000-0000-0000-000000000001', ARRAY['00000000-0000-0000-0000-000000000002'::uuid], "
            "'10.0.0.1', '10.0.0.0/8', '[1,5)', '[2026-01-05 00:00:00+00,)', 'empty', "
            f"12345678901234567.8912, 1e400, 12.50, {T})")
    events, letters, stats = poll_once(url, tmp_path, table="t")
    assert (letters, stats.errors) == ([], 0)
    assert [e["payload"] for e in events] == [{
        "id": 1, "u": "00000000-0000-0000-0000-000000000001", "us": ["00000000-0000-0000-0000-000000000002"],
        "ip": "10.0.0.1", "net": "10.0.0.0/8", "r": {"lower": 1, "upper": 5, "bounds": "[)"},
        "tr": {"lower": "2026-01-05T00:00:00+00:00", "upper": None, "bounds": "[)"},
        "e": {"lower": None, "upper": None, "bounds": "empty"},
        "big": "12345678901234567.8912", "huge": "1" + "0" * 400, "small": 12.5, "at": T}]


def test_postgres_a_uuid_key_names_the_events(pg_database, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id uuid PRIMARY KEY, seq bigserial, at bigint)",
            f"INSERT INTO t (id, at) VALUES ('00000000-0000-0000-0000-00000000000a', {T}), "
            f"('00000000-0000-0000-0000-00000000000b', {T})")
    events, letters, _ = poll_once(url, tmp_path, table="t", cursor_column="seq", key_column="id")
    assert letters == []
    assert [e["payload"]["id"] for e in events] == ["00000000-0000-0000-0000-00000000000a",
                                                    "00000000-0000-0000-0000-00000000000b"]
    assert len({e["event_id"] for e in events}) == 2


def test_postgres_a_silent_network_is_a_reported_timeout_and_stop_does_not_wait_for_it(pg_database, tmp_path, caplog):
    direct = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    proxy = Proxy(("127.0.0.1", 5432))
    proxy.up()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_database}"
    execute(direct, "CREATE TABLE t (id serial PRIMARY KEY, at bigint)", f"INSERT INTO t (at) VALUES ({T})")
    adapter = build_adapter(source(url, table="t", timeout_s=1), tmp_path)
    bus = MemoryBus()

    def ids() -> list[int]:
        return [e["payload"]["id"] for e in outcome(bus)[0]]

    async def run() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        await until(lambda: ids() == [1], "the first row")
        proxy.frozen.set()
        await asyncio.to_thread(execute, direct, f"INSERT INTO t (at) VALUES ({T})")
        await until(lambda: "the database gave no answer for 2s (twice timeout_s); the connection was cut"
                    in caplog.text, "the silent network reported")
        proxy.frozen.clear()
        await until(lambda: ids() == [1, 2], "the row written while the network was silent")
        proxy.frozen.set()
        await asyncio.sleep(0.3)  # the next poll waits for an answer that does not come
        stop.set()
        await asyncio.wait_for(task, 10)
        return proxy.frozen.is_set()

    try:
        with caplog.at_level(logging.WARNING):
            # run() returned while the network was still silent: stopping did not wait for the database.
            assert asyncio.run(run()) is True
    finally:
        proxy.frozen.clear()
        proxy.down()
    assert ids() == [1, 2] and outcome(bus)[1] == []
    assert "source db: stopped while a query of table t was running; the query is abandoned and its connection " \
           "cut" in caplog.text


def test_postgres_a_lock_held_by_another_session_is_a_timed_out_query_not_a_hang(pg_database, tmp_path, caplog):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, at bigint)", f"INSERT INTO t (at) VALUES ({T})")
    holder = sa.create_engine(url)
    adapter = build_adapter(source(url, table="t", timeout_s=1), tmp_path)
    bus = MemoryBus()

    async def run() -> list[dict[str, Any]]:
        stop = asyncio.Event()
        with holder.begin() as connection:
            connection.execute(sa.text("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"))
            task = asyncio.create_task(adapter.run(bus, stop))
            await until(lambda: "canceling statement due to statement timeout" in caplog.text,
                        "the query given up under the lock")
            under_lock = outcome(bus)[0]
        await until(lambda: len(outcome(bus)[0]) == 1, "the row once the lock is released")
        stop.set()
        await asyncio.wait_for(task, 10)
        return under_lock

    try:
        with caplog.at_level(logging.WARNING):
            assert asyncio.run(run()) == []
    finally:
        holder.dispose()
    assert [e["payload"]["id"] for e in outcome(bus)[0]] == [1]


def test_an_edited_source_starts_over_with_one_warning_instead_of_crashing_or_skipping(tmp_path, caplog):
    url = sqlite(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, updated_at INTEGER, at INTEGER)",
                 f"INSERT INTO t VALUES (1, 10, {T}), (2, 20, {T}), (3, 30, {T})",
                 "CREATE TABLE other (id INTEGER PRIMARY KEY, updated_at INTEGER, at INTEGER)",
                 f"INSERT INTO other VALUES (1, 10, {T}), (2, 20, {T})")
    state = tmp_path / "db.cursor.json"

    def ids(**options: Any) -> list[int]:
        return [e["payload"]["id"] for e in poll_once(url, tmp_path, **options)[0]]

    assert ids(table="t") == [1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.database"):
        assert ids(table="t", cursor_column="updated_at", tiebreak_column="id") == [1, 2, 3]
        assert ids(table="t", cursor_column="updated_at") == [1, 2, 3]
        assert ids(table="other") == [1, 2]
        assert ids(table="other") == []
        # A state file of an older version names only the table: a cursor of another width is seen.
        state.write_text(json.dumps({"cursor": [{"kind": "plain", "value": 3}], "null_rows": 0, "table": "t"}))
        assert ids(table="t", cursor_column="updated_at", tiebreak_column="id") == [1, 2, 3]
    prefix = f"source db: {state} holds the position of another reading"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)] == [
        f"{prefix} (cursor_column 'id' is now 'updated_at'; tiebreak_column None is now 'id'); "
        "reading table t from the start",
        f"{prefix} (tiebreak_column 'id' is now None); reading table t from the start",
        f"{prefix} (table 't' is now 'other'; cursor_column 'updated_at' is now 'id'); reading table other from "
        "the start",
        f"{prefix} (a cursor of 1 column(s) for updated_at, id); reading table t from the start"]


def test_postgres_a_timestamp_cursor_without_tiebreak_loses_no_row_and_names_each_row(pg_database, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    # Ten rows, three per second: batches of two end inside a second.
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, updated_at timestamptz, v int)",
            "INSERT INTO t (updated_at, v) SELECT '2026-01-05 00:00:00+00'::timestamptz + (g / 3) * interval "
            "'1 second', g FROM generate_series(0, 9) g")
    options = {"table": "t", "cursor_column": "updated_at", "time_field": "updated_at", "batch_size": 2}
    events, letters, _ = poll_once(url, tmp_path / "keyed", key_column="id", **options)
    assert (sorted(e["payload"]["id"] for e in events), letters) == (list(range(1, 11)), [])
    events, letters, _ = poll_once(url, tmp_path / "hashed", **options)
    assert (sorted(e["payload"]["id"] for e in events), letters) == (list(range(1, 11)), [])
    assert len({e["event_id"] for e in events}) == 10  # rows sharing a timestamp have ids of their own
    # A row written later at the last timestamp is read once; nothing read before comes again.
    execute(url, "INSERT INTO t (updated_at, v) VALUES ('2026-01-05 00:00:03+00', 10)")
    assert [e["payload"]["id"] for e in poll_once(url, tmp_path / "hashed", **options)[0]] == [11]
    assert poll_once(url, tmp_path / "hashed", **options)[:2] == ([], [])


def test_a_timestamp_cursor_without_tiebreak_is_a_warning_of_validation(caplog):
    from qraft_core.adapters.registry import validate_source

    config = SourceConfig(name="db", type="database", endpoint="sqlite:///feed.db",
                          options={"table": "t", "cursor_column": "updated_at"})
    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.database"):
        validate_source(config, "sources.yaml: source timestamp-cursor")
    assert [r.getMessage() for r in caplog.records] == [
        "sources.yaml: source timestamp-cursor.options.cursor_column: 'updated_at' looks like a timestamp, which "
        "rows may share, and there is no tiebreak_column: rows sharing it are told apart by a hash of each row; "
        "a tiebreak_column (a unique column such as the primary key) reads them for less"]


def test_postgres_a_table_dropped_and_recreated_is_read_from_the_start_or_said_to_be_behind(
        pg_database, tmp_path, caplog):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    create = "CREATE TABLE t (id serial PRIMARY KEY, v int, at bigint)"
    execute(url, create, f"INSERT INTO t (v, at) SELECT g, {T} FROM generate_series(1, 5) g")
    adapter = build_adapter(source(url, table="t"), tmp_path)
    bus = MemoryBus()
    state = tmp_path / "db.cursor.json"

    def values() -> list[int]:
        return [e["payload"]["v"] for e in outcome(bus)[0]]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        await until(lambda: values() == [1, 2, 3, 4, 5], "the first table's rows")
        await asyncio.to_thread(execute, url, "DROP TABLE t")
        # Seen missing, not only a query failed: recreated before the poller looked, the table would be
        # one whose rows lie before the position (the case below).
        await until(lambda: adapter.table_missing, "the missing table reported")
        await asyncio.to_thread(execute, url, create,
                                f"INSERT INTO t (v, at) SELECT 100 + g, {T} FROM generate_series(1, 3) g")
        # (A generous deadline: on a loaded machine the poller's reconnects after the drop are slow.)
        await until(lambda: values() == [1, 2, 3, 4, 5, 101, 102, 103], "the recreated table's rows", 90)
        stop.set()
        await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    assert (f"source db: table t is back after it was missing: reading it from the start (the position saved in "
            f"{state} is dropped)") in caplog.text
    # Recreated while the poller was stopped: its rows are below the saved position (id 3), which is said.
    execute(url, "DROP TABLE t", create, f"INSERT INTO t (v, at) VALUES (201, {T}), (202, {T})")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert poll_once(url, tmp_path, table="t")[:2] == ([], [])
    assert (f"source db: every row of table t is before the position saved in {state} (id 3, the table's "
            "largest 2): was the table emptied or recreated? Rows before the position are not read; move the state "
            "file away to read the table from the start") in caplog.text


def test_postgres_a_connection_option_the_driver_refuses_stops_the_source_as_a_config_error(tmp_path):
    config = SourceConfig(name="db", type="database",
                          endpoint="postgresql+psycopg://postgres@127.0.0.1:5432/postgres?sslmode=bogus",
                          options={"table": "t", "backoff_initial_s": 0.02, "backoff_max_s": 0.05})

    async def run() -> None:
        await asyncio.wait_for(build_adapter(config, tmp_path).run(MemoryBus(), asyncio.Event()), 20)

    with pytest.raises(ConfigError) as caught:
        asyncio.run(run())
    assert str(caught.value) == 'source db: endpoint: the driver refuses an option of the URL: invalid sslmode ' \
                                'value: "bogus"'


def test_postgres_oversize_rows_are_dead_letters_as_they_come(pg_database, tmp_path):
    from qraft_core.adapters.parsers import raw_json

    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    execute(url, "CREATE TABLE t (id serial PRIMARY KEY, body text, at bigint)",
            "INSERT INTO t (body, at) SELECT CASE WHEN g % 2 = 0 THEN repeat('x', 1048576) ELSE 'small' END, "
            f"{T} FROM generate_series(1, 6) g")
    events, letters, stats = poll_once(url, tmp_path, table="t")
    assert [e["payload"]["id"] for e in events] == [1, 3, 5]
    size = len(raw_json({"id": 2, "body": "x" * 1048576, "at": T}))
    assert [x["reason"] for x in letters] == [f"record is oversize: {size} bytes > 262144"] * 3
    assert stats.errors == 0
