"""ClickHouse through clickhouse-connect: embedded (chdb://) or a server (http(s)://).

Who holds a connection, and for how long, is `sessions.py`: per-thread
clients on a server, one shared engine per process under a cross-process
file lock on chDB. Error messages never carry the DSN's credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import polars as pl

from qraft_core.redact import redact
from qraft_core.store.base import STREAM_SEPARATORS, Filter, GroupSummary, StoreError
from qraft_core.store.cluster import StoreLayout, apply_migrations, delete_statement
from qraft_core.store.schema import spec
from qraft_core.store.sessions import ENGINE, ServerClients, lock_path_of
from qraft_core.store.table_spec import TableSpec, bare_type, checked_identifier, polars_dtype

log = logging.getLogger(__name__)

_SQL_OPS = {"=", "!=", ">", ">=", "<", "<=", "in", "has", "has_source"}
# How long the embedded engine stays open after a step of a pipeline run: the next step follows
# within milliseconds, and reopening the engine costs ~0.2 s a step (a quarter of a dense run's
# time). A process waiting for the store still gets it as soon as the session in flight ends.
STEP_KEEP_OPEN_S = 5.0
# ClickHouse refuses an insert block touching more partitions than `max_partitions_per_insert_block`
# (100 by default): longer frames go in as several blocks (`insert_blocks`).
MAX_PARTITIONS_PER_INSERT = 100


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files("qraft_core.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [part.strip() for part in body.split(";") if part.strip()]


def _ch_type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "UInt8"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    if isinstance(value, datetime):
        return "DateTime64(3, 'UTC')"
    return "String"


_TABLE_VERSIONS = (
    "SELECT table, toString(count()), toString(sum(cityHash64(name))) FROM system.parts "
    "WHERE database = currentDatabase() AND active AND table IN {tables:Array(String)} GROUP BY table"
)


class ClickHouseStore:
    """`EventStore` over clickhouse-connect.

    >>> ClickHouseStore("mysql://nope").dsn
    Traceback (most recent call last):
    ...
    ValueError: store DSN must start with chdb://, http:// or https:// (got 'mysql://nope')
    """

    def __init__(
        self,
        dsn: str,
        lock_timeout_s: float = 60.0,
        keep_open_s: float = 0.0,
        layout: StoreLayout | None = None,
    ) -> None:
        if not dsn.startswith(("chdb://", "http://", "https://")):
            raise ValueError(f"store DSN must start with chdb://, http:// or https:// (got {redact(dsn)!r})")
        self.dsn = dsn
        self.lock_timeout_s = lock_timeout_s
        # How long the embedded engine stays open after the last session (0: closed at once).
        self.keep_open_s = keep_open_s
        self.layout = layout or StoreLayout()
        self.embedded = dsn.startswith("chdb://")
        self._server = None if self.embedded else ServerClients(dsn)

    def keep_open_between_steps(self) -> ClickHouseStore:
        """Keep the embedded engine open between the steps of a run (`STEP_KEEP_OPEN_S`); returns self."""
        self.keep_open_s = max(self.keep_open_s, STEP_KEEP_OPEN_S)
        return self

    @property
    def lock_path(self) -> str | None:
        return lock_path_of(self.dsn) if self.embedded else None

    @contextmanager
    def session(self) -> Iterator[None]:
        with self._holder():
            yield

    @property
    def _client(self) -> Any:
        """The client of this thread's open session, or None (tests use it to send raw SQL)."""
        if self._server is not None:
            return self._server.current_client()
        return ENGINE.current_client(self.dsn)

    def _holder(self) -> AbstractContextManager[Any]:
        if self._server is not None:
            return self._server.session()
        return ENGINE.session(self.dsn, self.lock_timeout_s, self.keep_open_s)

    @contextmanager
    def _client_in_session(self) -> Iterator[Any]:
        """The client for one store call; driver errors become StoreError (credentials masked)."""
        with self._holder() as client:
            try:
                yield client
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"store call failed: {redact(str(exc))}") from exc

    # -- schema ---------------------------------------------------------
    def migrate(self) -> list[str]:
        migrations = [(version, name, _statements(sql)) for version, name, sql in migration_files()]
        with self._client_in_session() as client:
            # Processes sharing a server take turns; the embedded store's file lock already does that.
            lock_timeout = None if self.embedded else self.lock_timeout_s
            return apply_migrations(client, migrations, self.layout, lock_timeout)

    # -- writes ---------------------------------------------------------
    def insert(self, table: str, frame: pl.DataFrame) -> int:
        table_spec = spec(table)
        if frame.height == 0:
            return 0
        return self._insert_conformed(table_spec, _conform(frame, table_spec))

    def _insert_conformed(self, table_spec: TableSpec, rows: pl.DataFrame) -> int:
        with self._client_in_session() as client:
            for block in insert_blocks(rows, table_spec):
                client.insert_arrow(table_spec.name, block.to_arrow())
        return rows.height

    def delete(self, table: str, where: Sequence[Filter]) -> None:
        table_spec = spec(table)
        clause, params = _where_sql(table_spec, None, None, where)
        with self._client_in_session() as client:
            client.command(delete_statement(table_spec.name, clause, self.layout), parameters=params)

    def replace_window(
        self,
        table: str,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
        where: Sequence[Filter] = (),
    ) -> int:
        table_spec = spec(table)
        clause, params = _where_sql(table_spec, start, end, where)
        # Rows that cannot go in are refused before the window is emptied.
        rows = _conform(frame, table_spec) if frame.height else None
        with self._client_in_session() as client:
            # A DELETE is a mutation (~0.1 s even when it matches nothing); first runs find empty windows.
            found = client.query(f"SELECT 1 FROM {table_spec.name} {clause} LIMIT 1", parameters=params)
            if found.result_rows:
                client.command(delete_statement(table_spec.name, clause, self.layout), parameters=params)
            return 0 if rows is None else self._insert_conformed(table_spec, rows)

    # -- reads ----------------------------------------------------------
    def select(
        self,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        where: Sequence[Filter] = (),
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] = (),
        descending: bool = False,
        limit: int | None = None,
    ) -> pl.DataFrame:
        table_spec = spec(table)
        cols = [checked_identifier(c) for c in (columns or table_spec.columns)]
        clause, params = _where_sql(table_spec, start, end, where)
        sql = f"SELECT {', '.join(cols)} FROM {table_spec.name}{_final(table_spec)} {clause}"
        if order_by:
            direction = " DESC" if descending else ""
            sql += " ORDER BY " + ", ".join(checked_identifier(c) + direction for c in order_by)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._client_in_session() as client:
            arrow = client.query_arrow(sql, parameters=params)
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def count(
        self,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        where: Sequence[Filter] = (),
        group_by: str | None = None,
    ) -> dict[str, int]:
        table_spec = spec(table)
        clause, params = _where_sql(table_spec, start, end, where)
        final = _final(table_spec)
        with self._client_in_session() as client:
            if group_by is None:
                rows = client.query(f"SELECT '', count() FROM {table_spec.name}{final} {clause}", parameters=params).result_rows
            else:
                key = _group_key(table_spec, group_by)
                rows = client.query(
                    f"SELECT toString({key}), count() FROM {table_spec.name}{final} {clause} GROUP BY {key}",
                    parameters=params,
                ).result_rows
        return {str(k): int(n) for k, n in rows}

    def summarize(self, table: str, group_by: str, latest: Sequence[str] = ()) -> dict[str, GroupSummary]:
        table_spec = spec(table)
        time = _time_column(table_spec)
        key = checked_identifier(group_by)
        picks = "".join(f", argMax({checked_identifier(c)}, {time})" for c in latest)
        with self._client_in_session() as client:
            rows = client.query(
                f"SELECT toString({key}), count(), min({time}), max({time}){picks} "
                f"FROM {table_spec.name}{_final(table_spec)} GROUP BY {key}"
            ).result_rows
        return {
            str(group): GroupSummary(int(n), _as_utc(first), _as_utc(last), dict(zip(latest, values, strict=True)))
            for group, n, first, last, *values in rows
        }

    def max_time(self, table: str, group_by: str) -> dict[str, datetime]:
        table_spec = spec(table)
        time = _time_column(table_spec)
        key = checked_identifier(group_by)
        with self._client_in_session() as client:
            rows = client.query(
                f"SELECT toString({key}), max({time}) FROM {table_spec.name} GROUP BY {key}"
            ).result_rows
        return {str(k): _as_utc(t) for k, t in rows if t is not None}

    def extent(self, table: str, column: str, where: Sequence[Filter] = ()) -> tuple[Any, Any] | None:
        table_spec = spec(table)
        key = checked_identifier(column)
        clause, params = _where_sql(table_spec, None, None, where)
        with self._client_in_session() as client:
            rows = client.query(
                f"SELECT count(), min({key}), max({key}) FROM {table_spec.name} {clause}", parameters=params
            ).result_rows
        count, low, high = rows[0]
        if not count:
            return None
        if isinstance(low, datetime):
            return _as_utc(low), _as_utc(high)
        return low, high

    def table_versions(self, tables: Sequence[str]) -> dict[str, str]:
        """The table's active data parts: every insert, delete and merge makes new ones."""
        names = [spec(table).name for table in tables]
        with self._client_in_session() as client:
            rows = client.query(_TABLE_VERSIONS, parameters={"tables": names}).result_rows
        found = {str(table): f"{count}:{digest}" for table, count, digest in rows}
        return {name: found.get(name, "empty") for name in names}


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time_column(table_spec: TableSpec) -> str:
    if table_spec.time_column is None:
        raise ValueError(f"table {table_spec.name} has no time column")
    return table_spec.time_column


def _group_key(table_spec: TableSpec, column: str) -> str:
    """The GROUP BY expression for `column`: an array column groups by each of its elements."""
    key = checked_identifier(column)
    return f"arrayJoin({key})" if bare_type(table_spec.columns[column]).startswith("Array(") else key


def _final(table_spec: TableSpec) -> str:
    return " FINAL" if table_spec.dedup_key else ""


def _where_sql(
    table_spec: TableSpec, start: datetime | None, end: datetime | None, where: Sequence[Filter]
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if start is not None or end is not None:
        if table_spec.time_column is None:
            raise ValueError(f"table {table_spec.name} has no time column for a window")
        if start is not None:
            clauses.append(f"{table_spec.time_column} >= {{w_start:DateTime64(3, 'UTC')}}")
            params["w_start"] = start
        if end is not None:
            clauses.append(f"{table_spec.time_column} < {{w_end:DateTime64(3, 'UTC')}}")
            params["w_end"] = end
    for index, item in enumerate(where):
        column = checked_identifier(item.column)
        if item.op not in _SQL_OPS:
            raise ValueError(f"unsupported filter operator {item.op!r}")
        name = f"p{index}"
        declared = table_spec.columns.get(column, "")
        if item.op == "in":
            values = list(item.value)
            if not values:
                clauses.append("0")
                continue
            element = declared if declared and "Array" not in declared else _ch_type_of(values[0])
            clauses.append(f"{column} IN {{{name}:Array({bare_type(element)})}}")
            params[name] = values
        elif item.op == "has":
            clauses.append(f"has({column}, {{{name}:String}})")
            params[name] = item.value
        elif item.op == "has_source":
            value = f"{{{name}:String}}"
            tests = " OR ".join(f"startsWith(s, concat({value}, '{sep}'))" for sep in STREAM_SEPARATORS)
            clauses.append(f"arrayExists(s -> s = {value} OR {tests}, {column})")
            params[name] = item.value
        else:
            element = bare_type(declared) if declared and "Array" not in declared else _ch_type_of(item.value)
            clauses.append(f"{column} {item.op} {{{name}:{element}}}")
            params[name] = item.value
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def insert_blocks(frame: pl.DataFrame, table_spec: TableSpec) -> list[pl.DataFrame]:
    """The rows of a conformed frame in blocks of whole partitions of the table, at most
    `MAX_PARTITIONS_PER_INSERT` partitions each; a frame reaching no more partitions than that is
    the one block, untouched.

    >>> from datetime import timedelta
    >>> days = pl.DataFrame({"timestamp": [datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in range(215)]})
    >>> [block.height for block in insert_blocks(days, spec("raw_events"))]
    [100, 100, 15]
    >>> [block.height for block in insert_blocks(days[::107], spec("raw_events"))]  # three days, however far apart
    [3]
    >>> [block.height for block in insert_blocks(days.rename({"timestamp": "ts"}), spec("audit_log"))]  # no partitions
    [215]
    """
    key = table_spec.partition_key
    if key is None or frame.height == 0:
        return [frame]
    column = pl.col(key.column)
    first, last = frame.select(column.min().alias("first"), column.max().alias("last")).row(0)
    # The usual batch reaches a few partitions: no partition of each row is computed.
    if first is None or key.span(first, last) <= MAX_PARTITIONS_PER_INSERT:
        return [frame]
    block = ((key.value().rank("dense") - 1) // MAX_PARTITIONS_PER_INSERT).alias("_insert_block")
    return frame.with_columns(block).partition_by("_insert_block", maintain_order=True, include_key=False)


def _conform(frame: pl.DataFrame, table_spec: TableSpec) -> pl.DataFrame:
    """Select the table's columns in order and cast them to its types (missing → error)."""
    missing = [c for c in table_spec.columns if c not in frame.columns]
    if missing:
        raise StoreError(f"rows for {table_spec.name} lack columns: {', '.join(missing)}")
    try:
        return frame.select(
            pl.col(name).cast(polars_dtype(ch_type)) for name, ch_type in table_spec.columns.items()
        )
    except pl.exceptions.PolarsError as exc:
        raise StoreError(f"rows for {table_spec.name} do not fit its column types: {str(exc).splitlines()[0]}") from None
