"""The database poller against the local PostgreSQL server and a SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def pg_table() -> Iterator[tuple[sa.Engine, str]]:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    name = f"qraft_orders_{uuid.uuid4().hex[:10]}"
    yield engine, name
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def events_of(bus: MemoryBus) -> list[dict[str, Any]]:
    return [json.loads(line) for m in bus.queue for line in m.data.split(b"\n")]


async def wait_for_events(bus: MemoryBus, count: int) -> None:
    for _ in range(500):
        if len(events_of(bus)) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} events, got {len(events_of(bus))}")


def insert(engine: sa.Engine, table: str, rows: list[tuple[datetime, float]]) -> None:
    with engine.begin() as connection:
        for updated_at, amount in rows:
            connection.execute(sa.text(f"INSERT INTO {table} (updated_at, amount) VALUES (:u, :a)"),
                               {"u": updated_at, "a": amount})


def test_postgres_rows_once_each_across_ties_concurrent_inserts_and_restart(
    pg_table: tuple[sa.Engine, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, table = pg_table
    source = SourceConfig(name="orders", type="database", endpoint=POSTGRES_URL, options={
        "table": table, "cursor_column": "updated_at", "tiebreak_column": "id", "time_field": "updated_at",
        "event_type": "order", "batch_size": 2, "interval_s": 0.05, "backoff_initial_s": 0.05,
        "backoff_max_s": 0.1,
    })
    ties = [(T0, 1.0), (T0, 2.0), (T0, 3.0), (T0 + timedelta(seconds=1), 4.0)]
    later = [(T0 + timedelta(seconds=1), 5.0), (T0 + timedelta(seconds=2), 6.0)]

    async def first_run() -> MemoryBus:
        bus, stop = MemoryBus(), asyncio.Event()
        task = asyncio.create_task(build_adapter(source, tmp_path).run(bus, stop))
        await asyncio.sleep(0.3)  # the table does not exist yet: reported, retried
        with engine.begin() as connection:
            connection.execute(sa.text(
                f"CREATE TABLE {table} (id SERIAL PRIMARY KEY, updated_at TIMESTAMPTZ NOT NULL, "
                "amount NUMERIC(12, 2) NOT NULL)"))
        await asyncio.to_thread(insert, engine, table, ties)
        await wait_for_events(bus, 2)
        await asyncio.to_thread(insert, engine, table, later)  # while the poller is mid-way
        await wait_for_events(bus, 6)
        stop.set()
        await asyncio.wait_for(task, 10)
        return bus

    with caplog.at_level(logging.WARNING):
        bus = asyncio.run(first_run())
    assert f"table {table} does not exist yet" in caplog.text
    events = events_of(bus)
    assert [(e["event_id"], e["payload"]["id"], e["payload"]["amount"]) for e in events] == [
        (e["event_id"], i, float(i)) for i, e in enumerate(events, start=1)
    ]
    assert len({e["event_id"] for e in events}) == 6
    assert events[3]["timestamp"] == "2026-01-05T00:00:01Z"

    async def second_run() -> MemoryBus:
        bus, stop = MemoryBus(), asyncio.Event()
        task = asyncio.create_task(build_adapter(source, tmp_path).run(bus, stop))
        await asyncio.to_thread(insert, engine, table, [(T0 + timedelta(seconds=2), 7.0)])
        await wait_for_events(bus, 1)
        await asyncio.sleep(0.2)  # a few more polls: nothing older may come back
        stop.set()
        await asyncio.wait_for(task, 10)
        return bus

    again = events_of(asyncio.run(second_run()))
    assert [e["payload"]["id"] for e in again] == [7]


def test_sqlite_id_cursor_and_bad_rows_become_dead_letters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'feed.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE ticks (id INTEGER PRIMARY KEY, ts INTEGER, symbol TEXT)"))
        connection.execute(sa.text(
            "INSERT INTO ticks (id, ts, symbol) VALUES (1, 1767571200, 'A'), (2, 1767571200500, 'B'), "
            "(3, NULL, 'C'), (4, 1767571201000000, 'D')"))
    source = SourceConfig(name="ticks", type="database", endpoint=url,
                          options={"table": "ticks", "time_field": "ts", "interval_s": 0.05})

    async def run() -> MemoryBus:
        bus, stop = MemoryBus(), asyncio.Event()
        task = asyncio.create_task(build_adapter(source, tmp_path).run(bus, stop))
        await wait_for_events(bus, 4)
        stop.set()
        await asyncio.wait_for(task, 10)
        return bus

    records = events_of(asyncio.run(run()))
    events = [r for r in records if "event_id" in r]
    letters = [r["qraft_dead_letter"] for r in records if "qraft_dead_letter" in r]
    assert [(e["payload"]["symbol"], e["timestamp"]) for e in events] == [
        ("A", "2026-01-05T00:00:00Z"), ("B", "2026-01-05T00:00:00.500000Z"), ("D", "2026-01-05T00:00:01Z"),
    ]
    assert [letter["reason"] for letter in letters] == ["timestamp is missing"]
    saved = json.loads((tmp_path / "ticks.cursor.json").read_text())
    assert saved["cursor"] == [{"kind": "plain", "value": 4}]
    engine.dispose()


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("postgresql+psycopg://u@127.0.0.1:abc/x", "expected a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                                               "(invalid literal for int() with base 10: 'abc')"),
    ("postgresqlx://u@127.0.0.1/x", "expected a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                                    "(unknown database dialect 'postgresqlx')"),
    ("mysql://u@h/db", "the driver of 'mysql' needs the Python module MySQLdb, which is not installed"),
    ("mssql+pyodbc://u@h/db", "the driver of 'mssql+pyodbc' needs the Python module pyodbc, which is not installed"),
])
def test_an_endpoint_that_cannot_run_is_a_config_error_naming_the_key(endpoint: str, problem: str) -> None:
    from qraft_core.adapters.registry import validate_source
    from qraft_core.config import ConfigError

    config = SourceConfig(name="db", type="database", endpoint=endpoint, options={"table": "t"})
    with pytest.raises(ConfigError) as caught:
        validate_source(config, "sources.yaml: source db")
    assert str(caught.value) == f"sources.yaml: source db.endpoint: {problem}"


def test_placeholders_anywhere_in_the_endpoint_pass_validation() -> None:
    from qraft_core.adapters.registry import validate_source

    config = SourceConfig(name="db", type="database", endpoint="postgresql+psycopg://{user}:{pw}@db:{port}/x",
                          credentials={"user": "DB_USER", "pw": "DB_PW", "port": "DB_PORT"}, options={"table": "t"})
    assert validate_source(config, "sources.yaml: source db").table == "t"  # type: ignore[attr-defined]


def test_a_filled_in_port_that_is_not_a_number_is_a_config_error_that_does_not_quote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qraft_core.config import ConfigError

    monkeypatch.setenv("DB_PORT", "S3cret")
    config = SourceConfig(name="db", type="database", endpoint="postgresql+psycopg://u@127.0.0.1:{port}/x",
                          credentials={"port": "DB_PORT"}, options={"table": "t"})
    with pytest.raises(ConfigError) as caught:
        asyncio.run(build_adapter(config, tmp_path).run(MemoryBus(), asyncio.Event()))
    assert str(caught.value) == (
        "source db: endpoint: expected a SQLAlchemy URL such as postgresql+psycopg://user@host/db (a part of the "
        "URL is not valid, such as a port that is not a number)")
