"""The schema for a ClickHouse cluster, and retention TTLs, derived from the bundled migrations.

The migrations are written once, for one server. On a cluster (`store.cluster`), every table
`t` becomes `t_local`, a Replicated engine created `ON CLUSTER` on every node, plus `t`, a
Distributed table over it that every reader and writer uses unchanged. Rows are sharded by a
hash of the table's sort key: the copies of one row (a redelivered event, a re-run window)
always land on the same shard, so ReplacingMergeTree and `FINAL` de-duplicate them there, and
Replicated tables drop a retried insert block they have already seen. Window deletes run on
the local tables of every shard (`delete_statement`).

Retention adds a TTL per table (`store.retention_days`) and per source (`retention_days` in
sources.yaml, with `store.source_retention`), measured on the column that says when a row
arrived where there is one, else on its event-time column.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qraft_core.config import RETENTION_CLOCKS, QraftConfig, SourcesFile
from qraft_core.store.base import StoreUnavailable
from qraft_core.store.schema import checked_identifier

# The column whose age retention counts, per table (registered where qraft.yaml's
# store.retention_days is checked). Tables absent here are kept for good:
# human verdicts (annotations) and the source registry.
for _table, _clock in {
    "raw_events": "landed_at",
    "clean_events": "ingest_time",
    "dead_letters": "received_at",
    "audit_log": "ts",
    "features": "bar_time",
    "detections": "window_start",
    "detector_state": "window_start",
    "pattern_events": "window_start",
    "pattern_cards": "created_at",
}.items():
    RETENTION_CLOCKS.add(_table, _clock)
# Tables with a `source` column, where a per-source retention applies.
SOURCE_TABLES = {"raw_events", "clean_events"}

_CREATE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<name>\w+) \((?P<columns>.*)\)\s*"
    r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^)]*)\))?\s*(?P<tail>.*)$",
    re.DOTALL,
)
_ALTER = re.compile(r"^ALTER TABLE (?P<name>\w+)\s+(?P<rest>.*)$", re.DOTALL)
_ORDER_BY = re.compile(r"ORDER BY (?P<key>\([^)]*\)|\w+)")
_SETTINGS = re.compile(r"\s(SETTINGS\s.*)$", re.DOTALL)
# The TTL in `system.tables.engine_full`, which the server writes as `TTL … [SETTINGS …]`.
_TTL_SHOWN = re.compile(r"\sTTL (?P<ttl>.*?)(?:\sSETTINGS\s.*)?$", re.DOTALL)


class ClusterSchemaError(ValueError):
    """A migration statement with no cluster form."""


@dataclass(frozen=True)
class StoreLayout:
    """How the migrations are laid out on the server: cluster name and retention."""

    cluster: str = ""
    retention_days: Mapping[str, int] = field(default_factory=dict)
    source_retention_days: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cluster:
            checked_identifier(self.cluster)
        unknown = set(self.retention_days) - set(RETENTION_CLOCKS)
        if unknown:
            raise ValueError(f"no retention for tables {sorted(unknown)}; known: {sorted(RETENTION_CLOCKS)}")

    @classmethod
    def from_config(cls, config: QraftConfig, sources: SourcesFile | None = None) -> StoreLayout:
        """`store.cluster`, `store.retention_days`, and with `store.source_retention` each source's days."""
        per_source = {s.name: s.retention_days for s in sources.sources} if sources else {}
        return cls(config.store.cluster, dict(config.store.retention_days), per_source)

    def on_cluster(self, table: str) -> str:
        """Where DDL on a table's data goes: `t_local ON CLUSTER c` on a cluster, else `t`."""
        return f"{table}_local ON CLUSTER {self.cluster}" if self.cluster else table

    def ttl_clause(self, table: str) -> str:
        """`TTL …` for a table, or '' when its rows are kept for good.

        >>> StoreLayout(retention_days={"raw_events": 90}, source_retention_days={"news": 7}).ttl_clause("raw_events")
        "TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 90))"
        >>> StoreLayout(source_retention_days={"news": 7}).ttl_clause("raw_events")
        "TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 0)) DELETE WHERE source IN ('news')"
        """
        clock = RETENTION_CLOCKS.get(table)
        days = self.retention_days.get(table)
        sources = self.source_retention_days if table in SOURCE_TABLES else {}
        if clock is None or (days is None and not sources):
            return ""
        if not sources:
            return f"TTL {clock} + toIntervalDay({int(days or 0)})"
        cases = ", ".join(f"source = {_quoted(name)}, {int(n)}" for name, n in sorted(sources.items()))
        clause = f"TTL {clock} + toIntervalDay(multiIf({cases}, {int(days or 0)}))"
        if days is None:
            # Only the listed sources expire; the others are kept.
            clause += f" DELETE WHERE source IN ({', '.join(_quoted(name) for name in sorted(sources))})"
        return clause


def layout_statements(statements: Iterable[str], layout: StoreLayout) -> list[str]:
    """The migration's statements for this layout (unchanged for the embedded default)."""
    out: list[str] = []
    for statement in statements:
        create = _CREATE.match(statement)
        alter = _ALTER.match(statement)
        if create:
            out += _create(create, layout)
        elif alter and layout.cluster:
            name, rest = alter["name"], alter["rest"]
            # The local tables hold the data; the Distributed table mirrors their columns.
            out.append(f"ALTER TABLE {name}_local ON CLUSTER {layout.cluster} {rest}")
            out.append(f"ALTER TABLE {name} ON CLUSTER {layout.cluster} {rest}")
        elif layout.cluster:
            raise ClusterSchemaError(f"no cluster form for the migration statement: {statement[:80]}")
        else:
            out.append(statement)
    return out


def retention_statements(layout: StoreLayout, tables: Iterable[str]) -> list[str]:
    """`ALTER … MODIFY TTL` for existing tables, so a changed retention applies without a migration.

    Only metadata changes here (`materialize_ttl_after_modify = 0`); old parts expire as they merge.
    """
    return [f"ALTER TABLE {layout.on_cluster(table)} MODIFY {clause} SETTINGS materialize_ttl_after_modify = 0"
            for table in tables if (clause := layout.ttl_clause(table))]


def tables_with_other_ttl(client: Any, layout: StoreLayout) -> list[str]:
    """The tables with a retention whose TTL on the server is not the layout's (or that do not exist yet).

    Checked so that a start with an unchanged retention writes no table metadata: `MODIFY TTL`
    rewrites a table's metadata file every time, and one rewritten while the disk was full was left
    empty, so the store never opened again.
    """
    wanted = {table: clause for table in RETENTION_CLOCKS if (clause := layout.ttl_clause(table))}
    if not wanted:
        return []
    local = {f"{table}_local" if layout.cluster else table: table for table in wanted}
    rows = client.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
                        "AND name IN {names:Array(String)}", parameters={"names": sorted(local)}).result_rows
    shown = {local[name]: _TTL_SHOWN.search(engine) for name, engine in rows}
    return [table for table, clause in wanted.items()
            if (ttl := shown.get(table)) is None or ttl["ttl"] != _as_shown(clause)]


def delete_statement(table: str, where_clause: str, layout: StoreLayout) -> str:
    """A window delete: on a cluster it runs on the local table of every shard."""
    return f"DELETE FROM {layout.on_cluster(checked_identifier(table))} {where_clause}"


LOCK_TABLE = "qraft_migration_lock"
MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
                    "applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version")
Migration = tuple[int, str, list[str]]


def apply_migrations(
    client: Any, migrations: Sequence[Migration], layout: StoreLayout, lock_timeout_s: float | None
) -> list[str]:
    """Apply the pending migrations (version, name, statements) in this layout; returns their names.

    With `lock_timeout_s`, processes sharing a server take turns (`migration_lock`); the embedded
    store is already serialised by its file lock and passes None.
    """
    for statement in layout_statements([MIGRATIONS_TABLE], StoreLayout(layout.cluster)):
        client.command(statement)
    if not _pending(client, migrations) and not tables_with_other_ttl(client, layout):
        return []
    with migration_lock(client, layout, lock_timeout_s) if lock_timeout_s is not None else nullcontext():
        todo = _pending(client, migrations)
        for version, name, statements in todo:
            for statement in layout_statements(statements, layout):
                client.command(statement)
            client.insert("schema_migrations", [[version, name, datetime.now(UTC)]],
                          column_names=["version", "name", "applied_at"])
        for statement in retention_statements(layout, tables_with_other_ttl(client, layout)):
            client.command(statement)
    return [name for _, name, _ in todo]


def _pending(client: Any, migrations: Sequence[Migration]) -> list[Migration]:
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    return [m for m in migrations if m[0] not in done]


@contextmanager
def migration_lock(client: Any, layout: StoreLayout, timeout_s: float, poll_s: float = 0.2) -> Iterator[None]:
    """Held while this process migrates: creating a table is atomic (also `ON CLUSTER`), so the
    process whose CREATE succeeds holds the lock until it drops the table; the others wait."""
    target = f"{LOCK_TABLE} ON CLUSTER {layout.cluster}" if layout.cluster else LOCK_TABLE
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.command(f"CREATE TABLE {target} (holder String) ENGINE = Memory")
            break
        except Exception as exc:
            if "already exists" not in str(exc).lower():
                raise
        if time.monotonic() >= deadline:
            raise StoreUnavailable(
                f"another process has held the migration lock (table {LOCK_TABLE}) for more than "
                f"{timeout_s:.0f}s; if no migration is running, drop that table"
            )
        time.sleep(poll_s)
    try:
        yield
    finally:
        client.command(f"DROP TABLE IF EXISTS {target}")


def _create(match: re.Match[str], layout: StoreLayout) -> list[str]:
    name, columns, engine, args, tail = (
        match["name"], match["columns"], match["engine"], match["args"], match["tail"].strip()
    )
    ttl = layout.ttl_clause(name)
    if ttl:
        tail = _with_ttl(tail, ttl)
    if not layout.cluster:
        engine_sql = f"{engine}({args})" if args is not None else engine
        return [f"CREATE TABLE IF NOT EXISTS {name} ({columns}) ENGINE = {engine_sql}\n{tail}"]
    order_by = _ORDER_BY.search(tail)
    if order_by is None:
        raise ClusterSchemaError(f"table {name}: no ORDER BY to shard on")
    replicated_args = ", ".join(["'/clickhouse/tables/{shard}/{database}/{table}'", "'{replica}'",
                                 *([args] if args else [])])
    local = (f"CREATE TABLE IF NOT EXISTS {name}_local ON CLUSTER {layout.cluster} ({columns}) "
             f"ENGINE = Replicated{engine}({replicated_args})\n{tail}")
    key = order_by["key"].strip("()")
    distributed = (f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {layout.cluster} AS {name}_local "
                   f"ENGINE = Distributed({layout.cluster}, currentDatabase(), {name}_local, cityHash64({key}))")
    return [local, distributed]


def _with_ttl(tail: str, ttl: str) -> str:
    settings = _SETTINGS.search(tail)
    if settings is None:
        return f"{tail}\n{ttl}"
    return f"{tail[: settings.start()]}\n{ttl}\n{settings[1]}"


def _as_shown(clause: str) -> str:
    """A `ttl_clause` as the server shows it: without `TTL` and the default `DELETE` action."""
    return clause.removeprefix("TTL ").replace(" DELETE WHERE ", " WHERE ")


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
