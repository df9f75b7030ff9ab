"""Database polling (SQLAlchemy): new rows of one table, in cursor order.

The cursor is an increasing column (`id`, or `updated_at` with `id` as the
tie-breaker, so rows sharing a timestamp are neither skipped nor repeated).
It is saved atomically after each published batch, so a restarted poller
never re-emits a row. A missing table or column, a lost connection or a
database that went away is reported and retried with backoff. Values are read
as the driver gives them (no SQLAlchemy type conversion), so a column holding
values of several types (SQLite) cannot stop the poller. A row whose cursor is
NULL cannot be placed in cursor order: it becomes a dead letter, once.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import math
import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    NoSuchModuleError,
    NoSuchTableError,
    SQLAlchemyError,
)

from qraft_core.adapters.base import AdapterStats, register_adapter
from qraft_core.adapters.live import (
    Backoff,
    JsonState,
    LiveAdapter,
    RateLimiter,
    TlsOptions,
    sleep_or_stop,
)
from qraft_core.adapters.parsers import raw_json
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.events import StandardEvent, stable_id

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain identifier (letters, digits, _)")
    return value


class DatabaseOptions(TlsOptions):
    table: str
    # Optional schema (PostgreSQL) the table lives in.
    schema_name: str | None = None
    # An increasing column: an integer id or a last-modified timestamp.
    cursor_column: str = "id"
    # Breaks ties of `cursor_column` (a unique column such as the primary key).
    tiebreak_column: str | None = None
    # The row's identity; a row re-emitted with a new cursor value is a new version of it.
    key_column: str | None = None
    columns: list[str] = Field(default_factory=list)
    interval_s: float = Field(default=5.0, gt=0)
    # Connecting (PostgreSQL) or waiting for a locked database (SQLite) gives up after this long.
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("table", "schema_name", "cursor_column", "tiebreak_column", "key_column")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else _identifier(value, "name")

    @field_validator("columns")
    @classmethod
    def _plain_columns(cls, value: list[str]) -> list[str]:
        return [_identifier(column, "column") for column in value]


def _encode_cursor(value: Any) -> dict[str, Any]:
    if isinstance(value, datetime):
        return {"kind": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"kind": "date", "value": value.isoformat()}
    if isinstance(value, Decimal):
        return {"kind": "decimal", "value": str(value)}
    if isinstance(value, uuid.UUID):
        return {"kind": "uuid", "value": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"kind": "bytes", "value": base64.b64encode(bytes(value)).decode()}
    return {"kind": "plain", "value": value}


def _decode_cursor(stored: dict[str, Any]) -> Any:
    kind, value = stored["kind"], stored["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "uuid":
        return uuid.UUID(value)
    if kind == "bytes":
        return base64.b64decode(value)
    return value


_AS_TEXT = (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
            ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface)


def _is_range(value: Any) -> bool:
    """A range (psycopg's `Range`, PostgreSQL int4range, tstzrange, ...), known by its shape."""
    return all(hasattr(value, name) for name in ("lower", "upper", "bounds", "isempty"))


def json_value(value: Any) -> Any:
    """A column value as JSON can carry it, inside arrays too.

    >>> json_value([uuid.UUID(int=1), ipaddress.ip_network("10.0.0.0/8")])
    ['00000000-0000-0000-0000-000000000001', '10.0.0.0/8']
    >>> json_value(Decimal("12.50")), json_value(Decimal("12345678901234567.8912")), json_value(Decimal("1e400"))
    (12.5, '12345678901234567.8912', '1E+400')
    """
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, _AS_TEXT):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if _is_range(value):
        if value.isempty:
            return {"lower": None, "upper": None, "bounds": "empty"}
        return {"lower": json_value(value.lower), "upper": json_value(value.upper), "bounds": value.bounds}
    return value


def _decimal(value: Decimal) -> float | str:
    """A number when a float holds it exactly, else its text (NaN and infinity stay floats, to be refused)."""
    if not value.is_finite():
        return float(value)
    as_float = float(value)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


@register_adapter
class DatabaseAdapter(LiveAdapter):
    """Polls a table through a SQLAlchemy URL `endpoint` (postgresql+psycopg://…, sqlite:///…).

    >>> DatabaseAdapter.options_model.model_validate({"table": "orders"}).cursor_column
    'id'
    """

    type_name: ClassVar[str] = "database"
    endpoint_expected: ClassVar[str] = "a SQLAlchemy URL such as postgresql+psycopg://user@host/db"
    options_model: ClassVar[type[DatabaseOptions]] = DatabaseOptions  # type: ignore[assignment]
    options: DatabaseOptions

    @classmethod
    def check_source(cls, source: SourceConfig, options: BaseModel, where: str) -> None:
        super().check_source(source, options, where)
        # Placeholders stand for secrets that are not read at validation time.
        try:
            sa.engine.make_url(re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", "x", source.endpoint))
        except ArgumentError as exc:
            raise ConfigError(f"{where}.endpoint: expected {cls.endpoint_expected} ({exc})") from None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = JsonState(self.state_dir / f"{self.source.name}.cursor.json")
        saved = self.state.load()
        try:
            self.cursor: tuple[Any, ...] | None = (
                tuple(_decode_cursor(part) for part in saved["cursor"]) if saved.get("cursor") else None
            )
            # How many rows with a NULL cursor have been dead-lettered (they are read by position).
            self.null_rows: int = int(saved.get("null_rows", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self.state.broken(f"{type(exc).__name__}: {exc}") from None
        self.backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        self.limiter = RateLimiter(self.source.rate_limit_per_s)
        self.table: sa.TableClause | None = None
        self.engine: sa.Engine | None = None

    @property
    def cursor_columns(self) -> list[str]:
        options = self.options
        return [options.cursor_column, *([options.tiebreak_column] if options.tiebreak_column else [])]

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats:
        try:
            self.engine = sa.create_engine(self.endpoint, pool_pre_ping=True, connect_args=self._connect_args())
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(f"source {self.source.name}: endpoint: {exc}") from exc
        try:
            while not stop.is_set():
                await self.limiter.acquire()
                try:
                    rows = await asyncio.to_thread(self._fetch)
                    # Rows without a cursor are looked for once the table is read up to date.
                    nulls = await asyncio.to_thread(self._fetch_null_rows) if len(rows) < self.options.batch_size else []
                except (SQLAlchemyError, OSError) as exc:
                    self.table = None  # reflect again: the table may have been dropped or altered
                    delay = self.backoff.next()
                    self.error("query", "query failed (%s); retrying in %.1fs",
                               (str(exc).splitlines() or [type(exc).__name__])[0], delay)
                    if await sleep_or_stop(stop, delay):
                        break
                    continue
                self.backoff.reset()
                if rows:
                    await self._publish_rows(publisher, rows)
                if nulls:
                    await self._publish_null_rows(publisher, nulls)
                if len(rows) < self.options.batch_size and await sleep_or_stop(stop, self.options.interval_s):
                    break
        finally:
            self.engine.dispose()
        return self.stats

    def _connect_args(self) -> dict[str, Any]:
        timeout = self.options.timeout_s
        if self.endpoint.startswith("postgresql"):
            # libpq waits for an unreachable server without end unless told; it counts whole seconds, at least 2.
            return {"connect_timeout": max(2, math.ceil(timeout)), **self._tls_args()}
        if self.endpoint.startswith("sqlite"):
            return {"timeout": timeout}
        return {}

    def _tls_args(self) -> dict[str, Any]:
        """PostgreSQL TLS from `verify`/`ca_file`; other drivers take TLS settings in the URL."""
        options = self.options
        if not self.endpoint.startswith("postgresql") or options.ca_file is None:
            return {}
        if not options.ca_file.exists():
            raise ConfigError(f"source {self.source.name}: options.ca_file: {options.ca_file} does not exist")
        mode = "verify-full" if options.verify else "require"
        return {"sslrootcert": str(options.ca_file), "sslmode": mode}

    def _reflect(self) -> sa.TableClause | None:
        """The table's columns, without types: values come as the driver reads them."""
        assert self.engine is not None
        try:
            names = [column["name"] for column in sa.inspect(self.engine).get_columns(
                self.options.table, schema=self.options.schema_name)]
        except NoSuchTableError:
            names = []
        if not names:
            where = f"{self.options.schema_name}." if self.options.schema_name else ""
            self.error("missing_table", "table %s%s does not exist yet; retrying every %ss",
                       where, self.options.table, self.options.interval_s)
            return None
        missing = [c for c in [*self.cursor_columns, *self.options.columns] if c not in names]
        if missing:
            self.error("missing_column", "table %s has no column(s) %s (columns: %s); retrying",
                       self.options.table, ", ".join(missing), ", ".join(names))
            return None
        return sa.table(self.options.table, *(sa.column(name) for name in names), schema=self.options.schema_name)

    def _selection(self) -> tuple[sa.TableClause, list[sa.ColumnClause[Any]], list[sa.ColumnClause[Any]]] | None:
        """The table, its cursor columns and the columns to read (reflected when not known)."""
        if self.table is None:
            self.table = self._reflect()
            if self.table is None:
                return None
        table = self.table
        keys = [table.c[name] for name in self.cursor_columns]
        chosen = [table.c[name] for name in self.options.columns] if self.options.columns else list(table.c)
        chosen += [column for column in keys if column.name not in {c.name for c in chosen}]
        return table, keys, chosen

    def _fetch(self) -> list[dict[str, Any]]:
        """The next batch of rows after the cursor, in cursor order (runs in a worker thread)."""
        assert self.engine is not None
        selection = self._selection()
        if selection is None:
            return []
        _, keys, chosen = selection
        # A NULL cursor would stop the reading for good (nothing is greater than NULL).
        query = sa.select(*chosen).where(*(key.is_not(None) for key in keys))
        if self.cursor is not None:
            query = query.where(self._after_cursor(keys))
        query = query.order_by(*keys).limit(self.options.batch_size)
        with self.engine.connect() as connection:
            return self._rows(connection, query, chosen)

    def _rows(self, connection: sa.Connection, query: sa.Select[Any],
              chosen: list[sa.ColumnClause[Any]]) -> list[dict[str, Any]]:
        try:
            return [dict(row._mapping) for row in connection.execute(query)]
        except DataError as exc:
            # A value the driver cannot give as Python (PostgreSQL's timestamp 'infinity', a date
            # before year 1): this batch is read as text, rather than the query failing for ever.
            # The cursor columns keep their type, since the next query compares them.
            self.error("value", "a value cannot be read (%s); reading this batch as text",
                       str(exc.orig).splitlines()[0] if exc.orig else exc)
            connection.rollback()
            as_text = query.with_only_columns(
                *(c if c.name in self.cursor_columns else sa.cast(c, sa.String).label(c.name) for c in chosen))
            return [dict(row._mapping) for row in connection.execute(as_text)]

    def _fetch_null_rows(self) -> list[dict[str, Any]]:
        """Rows with a NULL cursor not yet dead-lettered, found by position (runs in a worker thread)."""
        assert self.engine is not None
        selection = self._selection()
        if selection is None:
            return []
        table, keys, chosen = selection
        without = sa.or_(*(key.is_(None) for key in keys))
        order = [table.c[name] for name in (self.options.key_column, self.options.tiebreak_column)
                 if name and name not in self.cursor_columns[:1]]
        with self.engine.connect() as connection:
            count = connection.execute(sa.select(sa.func.count()).select_from(table).where(without)).scalar_one()
            if count <= self.null_rows:
                self.null_rows = count  # some were fixed or deleted
                return []
            query = sa.select(*chosen).where(without).order_by(*order).offset(self.null_rows)
            return self._rows(connection, query.limit(self.options.batch_size), chosen)

    def _after_cursor(self, keys: list[sa.ColumnClause[Any]]) -> sa.ColumnElement[bool]:
        """(cursor, tiebreak) > saved, spelled out so every dialect can use an index."""
        assert self.cursor is not None
        if len(keys) == 1:
            return keys[0] > self.cursor[0]
        first, second = keys
        return sa.or_(first > self.cursor[0], sa.and_(first == self.cursor[0], second > self.cursor[1]))

    async def _publish_rows(self, publisher: Publisher, rows: list[dict[str, Any]]) -> None:
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        key_column = self.options.key_column or self.options.tiebreak_column or self.options.cursor_column
        for row in rows:
            record = {name: json_value(value) for name, value in row.items()}
            event = self.judge(record, raw_json(record), batch, failures)
            if event is not None and not self.options.id_field:
                version = (record[key_column],) if key_column == self.options.cursor_column else (
                    record[key_column], record[self.options.cursor_column])
                batch[-1] = event.model_copy(update={"event_id": stable_id(self.source.name, *version)})
        await self.publish(publisher, batch, failures)
        last = rows[-1]
        self.cursor = tuple(last[name] for name in self.cursor_columns)
        self._save()

    async def _publish_null_rows(self, publisher: Publisher, rows: list[dict[str, Any]]) -> None:
        columns = ", ".join(self.cursor_columns)
        reason = f"row has NULL in the cursor column(s) {columns}, so it cannot be read in cursor order"
        failures = []
        for row in rows:
            record = {name: json_value(value) for name, value in row.items()}
            failures.append((reason, raw_json(record)))
        await self.publish(publisher, [], failures)
        self.null_rows += len(rows)
        self._save()

    def _save(self) -> None:
        cursor = None if self.cursor is None else [_encode_cursor(value) for value in self.cursor]
        self.state.save({"cursor": cursor, "table": self.options.table, "null_rows": self.null_rows})

