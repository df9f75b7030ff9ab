"""Migrating an existing embedded store (chDB): DDL only where the schema or the retention changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qraft_core.store import StoreLayout, open_store
from qraft_core.store import clickhouse as clickhouse_store
from qraft_core.store.cluster import MIGRATIONS_TABLE, apply_migrations, layout_statements

# Each form of TTL: a table's days, per-source days over a table's days, per-source days alone.
RETENTION = StoreLayout(retention_days={"raw_events": 30, "audit_log": 90}, source_retention_days={"news": 7})
# Sent on every start; IF NOT EXISTS leaves an existing table as it is.
CREATE_MIGRATIONS_TABLE = layout_statements([MIGRATIONS_TABLE], StoreLayout())


class RecordingClient:
    """The store's client, keeping the statements sent with `command` (DDL among them)."""

    def __init__(self, client: Any, commands: list[str]) -> None:
        self._client, self.commands = client, commands

    def command(self, statement: str, **kwargs: Any) -> Any:
        self.commands.append(statement)
        return self._client.command(statement, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(clickhouse_store, "apply_migrations",
                        lambda client, *args: apply_migrations(RecordingClient(client, sent), *args))
    return sent


def table_metadata(path: Path) -> dict[str, tuple[int, bytes]]:
    return {file.name: (file.stat().st_mtime_ns, file.read_bytes()) for file in path.rglob("*.sql")}


def test_a_start_with_unchanged_retention_writes_no_table_metadata(tmp_path: Path, commands: list[str]) -> None:
    path = tmp_path / "clickhouse"
    store = open_store(f"chdb://{path}", layout=RETENTION)
    assert len(commands) > 1  # the migrations, with the TTLs in their CREATE TABLE
    before = table_metadata(path)
    assert before["audit_log.sql"][1]
    commands.clear()

    assert store.migrate() == []
    assert commands == CREATE_MIGRATIONS_TABLE
    assert table_metadata(path) == before


def test_a_changed_retention_alters_only_the_tables_it_changes(tmp_path: Path, commands: list[str]) -> None:
    path = tmp_path / "clickhouse"
    open_store(f"chdb://{path}", layout=RETENTION)
    commands.clear()

    changed = StoreLayout(retention_days={"raw_events": 60, "audit_log": 90}, source_retention_days={"news": 7})
    assert clickhouse_store.ClickHouseStore(f"chdb://{path}", layout=changed).migrate() == []
    assert commands == [
        *CREATE_MIGRATIONS_TABLE,
        "ALTER TABLE raw_events MODIFY TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 60)) "
        "SETTINGS materialize_ttl_after_modify = 0",
    ]
    store = clickhouse_store.ClickHouseStore(f"chdb://{path}", layout=changed)
    with store._client_in_session() as client:
        create = client.query("SHOW CREATE TABLE raw_events").result_rows[0][0]
    assert "TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 60))" in create
    commands.clear()
    assert store.migrate() == []
    assert commands == CREATE_MIGRATIONS_TABLE
