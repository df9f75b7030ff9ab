"""Database polling (SQLAlchemy): new rows of one table, in cursor order.

The cursor is an increasing column (`id`, or `updated_at` with `id` as the
tie-breaker). Without a tie-breaker the poller reads from the last cursor value
on (`>=`) and skips the rows it already emitted at that value (known by
`key_column` or by a hash of the row), so rows sharing a timestamp are neither
skipped nor repeated. The position is saved atomically after each published
batch, with the table and columns it belongs to, so a restarted poller never
re-emits a row and an edited source starts over instead of misreading.
A missing table or column, a lost connection or a database that went away is
reported and retried with backoff; a query that hangs (a silent network, a lock)
is given up after `timeout_s`. Values are read as the driver gives them (no
SQLAlchemy type conversion), so a column holding values of several types
(SQLite) cannot stop the poller. A row whose cursor is NULL cannot be placed in
cursor order: it becomes a dead letter, once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

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
from qraft_core.events import MAX_DEAD_LETTER_RAW, MAX_RECORD_BYTES, StandardEvent, stable_id

log = logging.getLogger(__name__)

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
    # Connecting, one query (a lock waited for included) and a silent network each give up after this long.
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


# Rows are fetched a chunk of about this many bytes at a time, so an oversize row is cut to its dead letter
# before the next ones come.
_CHUNK_BYTES = 4 * 1024 * 1024
_CHUNK_MAX_ROWS = 1000
# How long a stopping source lets a running query end before cutting its connection.
_STOP_GRACE_S = 1.0
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
# Cursor column names of timestamps, which several rows may share.
_TIME_LIKE = re.compile(r"(_at|_on|_ts|^ts|time|date|stamp|modified|updated|created|changed)$", re.IGNORECASE)
# libpq's words for a connection option it refuses: retrying cannot help.
_OPTION_PROBLEM = re.compile(
    r'invalid connection option "[^"]*"|invalid [\w ]+? value(?:: "[^"]*")?(?: for connection option "[^"]*")?'
    r'|missing "=" after "[^"]*" in connection info string')
# The rows with a NULL cursor that were dead-lettered and are still in the table are remembered (by key, or
# by a hash of the row), up to this many: beyond it, the others wait until some are fixed, with a warning.
_NULL_ROWS_KEPT = 10_000
# Without a tie-breaker, a full batch takes in every row at its last cursor value, up to this many: the next
# batch re-reads them once, where batches ending inside a value would re-read all before them each time.
_VALUE_MAX_ROWS = 100_000
_warned_time_cursor: set[str] = set()
T = TypeVar("T")


class _QueryStalled(Exception):
    """The database gave no answer for too long: the worker thread is abandoned, its connection cut."""


class _Stopped(Exception):
    """The source was stopped while a query was running."""


@dataclass
class _Row:
    cursor: tuple[Any, ...]  # the cursor columns' values as the driver gave them
    record: dict[str, Any] | None  # the row as JSON values; None when oversize
    raw: bytes  # the record as JSON, cut to a dead letter's size when oversize
    size: int
    identity: str  # tells apart rows sharing a cursor value: the key as text, else a hash of the row


@dataclass
class _Batch:
    rows: list[_Row]
    up_to_date: bool  # fewer rows came than asked for


@dataclass
class _NullRows:
    kept: Counter[str]  # the rows remembered as dead-lettered that still have a NULL cursor
    new: list[_Row]  # the rows with a NULL cursor not yet dead-lettered (at most batch_size)
    more: bool  # more than _NULL_ROWS_KEPT rows have a NULL cursor


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
        # Placeholders stand for secrets that are not read at validation time; "1" fits any part of a URL.
        try:
            url = sa.engine.make_url(_PLACEHOLDER.sub("1", source.endpoint))
        except (ArgumentError, ValueError) as exc:
            raise ConfigError(f"{where}.endpoint: expected {cls.endpoint_expected} ({exc})") from None
        try:
            url.get_dialect().import_dbapi()
        except NoSuchModuleError:
            raise ConfigError(f"{where}.endpoint: expected {cls.endpoint_expected} "
                              f"(unknown database dialect {url.drivername!r})") from None
        except ImportError as exc:
            raise ConfigError(f"{where}.endpoint: the driver of {url.drivername!r} needs the Python module "
                              f"{exc.name or exc}, which is not installed") from None
        assert isinstance(options, DatabaseOptions)
        if (options.tiebreak_column is None and _TIME_LIKE.search(options.cursor_column)
                and where not in _warned_time_cursor and log.isEnabledFor(logging.WARNING)):  # (said once, when heard)
            _warned_time_cursor.add(where)
            log.warning("%s.options.cursor_column: %r looks like a timestamp, which rows may share, and there is "
                        "no tiebreak_column: rows sharing it are told apart by %s; a tiebreak_column (a unique "
                        "column such as the primary key) reads them for less", where, options.cursor_column,
                        "key_column" if options.key_column else "a hash of each row")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = JsonState(self.state_dir / f"{self.source.name}.cursor.json")
        saved = self.state.load()
        try:
            self.cursor: tuple[Any, ...] | None = (
                tuple(_decode_cursor(part) for part in saved["cursor"]) if saved.get("cursor") else None
            )
            # The rows with a NULL cursor dead-lettered and still there, by identity (as _Row.identity).
            self.null_letters: Counter[str] = Counter(str(item) for item in saved.get("null_letters", []))
            # A state file of an older version counts them instead: the first ones in key order.
            self.null_legacy: int = int(saved.get("null_rows", 0))
            # Without a tie-breaker: the rows emitted at the cursor value (None: all rows at it, as saved
            # before these were kept).
            at_cursor = saved.get("at_cursor")
            self.at_cursor: list[str] | None = None if at_cursor is None else [str(item) for item in at_cursor]
            # The table was found missing: when it is back, it is another table, read from the start.
            self.table_missing: bool = bool(saved.get("table_missing", False))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self.state.broken(f"{type(exc).__name__}: {exc}") from None
        changes = self._changes(saved)
        if changes:
            log.warning("source %s: %s holds the position of another reading (%s); reading table %s from the start",
                        self.source.name, self.state.path, "; ".join(changes), self.options.table,
                        extra=self.log_fields)
            self._start_over()
        self.backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        self.limiter = RateLimiter(self.source.rate_limit_per_s)
        self.table: sa.TableClause | None = None
        self.cursor_unique = False
        self.engine: sa.Engine | None = None
        # The driver connection each worker thread uses, to cut when it hangs; when a worker last made progress.
        self.connections: dict[int, Any] = {}
        self.progress_at = 0.0
        self.null_overflow = False
        self.behind = False  # every row was last seen before the saved position
        self.crowded: tuple[Any, ...] | None = None  # the last cursor value said to hold too many rows

    @property
    def cursor_columns(self) -> list[str]:
        options = self.options
        return [options.cursor_column, *([options.tiebreak_column] if options.tiebreak_column else [])]

    def _reading(self) -> dict[str, str | None]:
        """What the saved position belongs to."""
        options = self.options
        return {"table": options.table, "schema_name": options.schema_name, "cursor_column": options.cursor_column,
                "tiebreak_column": options.tiebreak_column}

    def _changes(self, saved: dict[str, Any]) -> list[str]:
        """How the saved position's reading differs from the configured one (state files of older versions
        name only the table)."""
        if not saved.get("cursor") and not saved.get("null_rows") and not saved.get("null_letters"):
            return []
        changes = [f"{key} {saved[key]!r} is now {value!r}" for key, value in self._reading().items()
                   if key in saved and saved[key] != value]
        if not changes and saved.get("cursor") and len(saved["cursor"]) != len(self.cursor_columns):
            changes.append(f"a cursor of {len(saved['cursor'])} column(s) for {', '.join(self.cursor_columns)}")
        return changes

    def _start_over(self) -> None:
        self.cursor, self.at_cursor, self.table_missing = None, None, False
        self.null_letters, self.null_legacy = Counter(), 0

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats:
        self.engine = self._engine()
        try:
            while not stop.is_set():
                await self.limiter.acquire()
                try:
                    batch = await self._in_worker(self._fetch, stop)
                    # Rows without a cursor are looked for once the table is read up to date.
                    nulls = await self._in_worker(self._fetch_null_rows, stop) if batch.up_to_date else None
                except _Stopped:
                    break
                except (SQLAlchemyError, OSError, _QueryStalled) as exc:
                    problem = (str(exc).splitlines() or [type(exc).__name__])[0]
                    if refused := _OPTION_PROBLEM.search(str(exc)):
                        raise ConfigError(f"source {self.source.name}: endpoint: the driver refuses an option "
                                          f"of the URL: {refused.group(0)}") from None
                    self.table = None  # reflect again: the table may have been dropped or altered
                    delay = self.backoff.next()
                    self.error("query", "query failed (%s); retrying in %.1fs", problem, delay)
                    if await sleep_or_stop(stop, delay):
                        break
                    continue
                self.backoff.reset()
                if batch.rows:
                    await self._publish_rows(publisher, batch.rows)
                if nulls is not None:
                    await self._publish_null_rows(publisher, nulls)
                if batch.up_to_date and await sleep_or_stop(stop, self.options.interval_s):
                    break
        finally:
            self.engine.dispose()
        return self.stats

    def _engine(self) -> sa.Engine:
        try:
            url = sa.engine.make_url(self.endpoint)
            return sa.create_engine(url, pool_pre_ping=True, connect_args=self._connect_args(url))
        except ValueError:
            # The message would quote the URL's part, which may be a secret filled in.
            raise ConfigError(f"source {self.source.name}: endpoint: expected {self.endpoint_expected} "
                              "(a part of the URL is not valid, such as a port that is not a number)") from None
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"source {self.source.name}: endpoint: {exc}") from exc

    def _connect_args(self, url: sa.URL) -> dict[str, Any]:
        """Timeouts for the driver: connecting, each statement, a network that goes silent."""
        timeout = self.options.timeout_s
        backend, driver = url.get_backend_name(), url.get_driver_name()
        if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
            # libpq waits for an unreachable server without end unless told; it counts whole seconds, at least 2.
            seconds = max(2, math.ceil(timeout))
            args: dict[str, Any] = {"connect_timeout": seconds, "keepalives": 1, "keepalives_idle": seconds,
                                    "keepalives_interval": max(1, seconds // 3), "keepalives_count": 3,
                                    **self._tls_args()}
            if _libpq_version(driver) >= 120000:
                args["tcp_user_timeout"] = math.ceil(timeout * 1000)  # sent data unacknowledged that long
            if "options" not in url.query:  # a URL's own server options are left as they are
                # A lock waited for counts too, so a migration's lock is a reported error, not a hang.
                args["options"] = f"-c statement_timeout={math.ceil(timeout * 1000)}"
            return args
        if backend == "postgresql" and driver == "pg8000":
            return {"timeout": timeout}
        if backend == "mysql" and driver in ("pymysql", "mysqldb"):
            seconds = max(1, math.ceil(timeout))
            return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
        if backend == "sqlite":
            return {"timeout": timeout}
        return {}

    def _tls_args(self) -> dict[str, Any]:
        """PostgreSQL TLS from `verify`/`ca_file`; other drivers take TLS settings in the URL."""
        options = self.options
        if options.ca_file is None:
            return {}
        if not options.ca_file.exists():
            raise ConfigError(f"source {self.source.name}: options.ca_file: {options.ca_file} does not exist")
        mode = "verify-full" if options.verify else "require"
        return {"sslrootcert": str(options.ca_file), "sslmode": mode}

    async def _in_worker(self, work: Callable[[sa.Connection], T], stop: asyncio.Event) -> T:
        """`work` on a connection in a thread of its own. A thread blocked in a driver cannot be cancelled:
        when it makes no progress for twice `timeout_s` (a silent network) or the source stops, it is
        abandoned and its connection cut, so stopping never waits for the database."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if outcome.done():
                return
            if error is None:
                outcome.set_result(value)
            else:
                outcome.set_exception(error)

        def target() -> None:
            value, error = None, None
            try:
                with self._connection() as connection:
                    value = work(connection)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for this work
                loop.call_soon_threadsafe(settle, value, error)

        stall_s = 2 * self.options.timeout_s
        self.progress_at = time.monotonic()
        worker = threading.Thread(target=target, name=f"qraft-database-{self.source.name}", daemon=True)
        worker.start()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            while not outcome.done() and not stop.is_set():
                quiet = time.monotonic() - self.progress_at
                if quiet >= stall_s:
                    break
                await asyncio.wait({outcome, stopping}, timeout=stall_s - quiet,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if stop.is_set() and not outcome.done():
            # A query about to end is let end: only a hung one is cut.
            await asyncio.wait({outcome}, timeout=min(_STOP_GRACE_S, stall_s))
        if outcome.done():
            result: T = outcome.result()
            return result
        outcome.cancel()  # what the abandoned thread ends with is dropped
        self._cut(worker.ident)
        if stop.is_set():
            log.error("source %s: stopped while a query of table %s was running; the query is abandoned and its "
                      "connection cut", self.source.name, self.options.table, extra=self.log_fields)
            raise _Stopped
        raise _QueryStalled(f"the database gave no answer for {stall_s:g}s (twice timeout_s); "
                            "the connection was cut")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        assert self.engine is not None
        with self.engine.connect() as connection:
            ident = threading.get_ident()
            self.connections[ident] = connection.connection.dbapi_connection
            self.progress_at = time.monotonic()
            try:
                yield connection
            finally:
                self.connections.pop(ident, None)

    def _cut(self, ident: int | None) -> None:
        """Make a hung driver call of thread `ident` return: SQLite interrupts the statement, a network
        driver's socket is shut down (closing it is left to the driver)."""
        connection = self.connections.get(ident) if ident is not None else None
        if connection is None:
            return  # still connecting: the driver's connect timeout ends it
        interrupt = getattr(connection, "interrupt", None)
        if callable(interrupt):
            with contextlib.suppress(Exception):  # the connection may be closed already
                interrupt()
            return
        fileno = getattr(connection, "fileno", None)
        if not callable(fileno):
            return
        try:
            duplicate = os.dup(fileno())
        except Exception:  # noqa: BLE001 - the connection may be closed already
            return
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            return
        with sock, contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _reflect(self, connection: sa.Connection) -> sa.TableClause | None:
        """The table's columns, without types: values come as the driver reads them."""
        options = self.options
        inspector = sa.inspect(connection)
        try:
            names = [column["name"] for column in inspector.get_columns(options.table, schema=options.schema_name)]
        except NoSuchTableError:
            names = []
        where = f"{options.schema_name}." if options.schema_name else ""
        if not names:
            self.error("missing_table", "table %s%s does not exist yet; retrying every %ss",
                       where, options.table, options.interval_s)
            if not self.table_missing and (self.cursor is not None or self.null_letters or self.null_legacy):
                self.table_missing = True
                self._save()
            return None
        missing = [c for c in [*self.cursor_columns, *options.columns] if c not in names]
        if missing:
            self.error("missing_column", "table %s has no column(s) %s (columns: %s); retrying",
                       options.table, ", ".join(missing), ", ".join(names))
            return None
        if options.key_column and options.key_column not in names:
            # Without it every row would have the same identity, hence the same event id.
            self.error("missing_column", "options.key_column: table %s has no column %s (columns: %s); retrying",
                       options.table, options.key_column, ", ".join(names))
            return None
        table = sa.table(options.table, *(sa.column(name) for name in names), schema=options.schema_name)
        self.cursor_unique = [options.cursor_column] in self._unique_columns(inspector)
        if self.table_missing:
            log.warning("source %s: table %s%s is back after it was missing: reading it from the start "
                        "(the position saved in %s is dropped)", self.source.name, where, options.table,
                        self.state.path, extra=self.log_fields)
            self._start_over()
            self._save()
        return table

    def _unique_columns(self, inspector: sa.Inspector) -> list[list[str]]:
        options = self.options
        unique = [inspector.get_pk_constraint(options.table, schema=options.schema_name)["constrained_columns"]]
        with contextlib.suppress(NotImplementedError):
            unique += [c["column_names"] for c in inspector.get_unique_constraints(options.table,
                                                                                    schema=options.schema_name)]
        return unique

    def _check_position(self, connection: sa.Connection, table: sa.TableClause) -> None:
        """Warn, once each time it happens, when every row is before the saved position: a table emptied and
        refilled, or dropped and recreated while the poller was not looking, has its new rows below the old
        cursor. Asked on each poll that finds nothing, in one query an index on the cursor serves."""
        assert self.cursor is not None
        first = table.c[self.options.cursor_column]
        # The largest as text: it is only shown, and a value the driver cannot read must not fail the poll.
        largest, reaches = connection.execute(sa.select(
            sa.cast(sa.func.max(first), sa.String), sa.exists().where(first >= self.cursor[0]))).one()
        behind = largest is not None and not reaches
        if behind and not self.behind:
            log.warning("source %s: every row of table %s is before the position saved in %s (%s %s, the table's "
                        "largest %s): was the table emptied or recreated? Rows before the position are not read; "
                        "move the state file away to read the table from the start", self.source.name,
                        self.options.table, self.state.path, self.options.cursor_column, self.cursor[0], largest,
                        extra=self.log_fields)
        self.behind = behind

    def _selection(self, connection: sa.Connection) -> tuple[
            sa.TableClause, list[sa.ColumnClause[Any]], list[sa.ColumnClause[Any]]] | None:
        """The table, its cursor columns and the columns to read (reflected when not known)."""
        if self.table is None:
            self.table = self._reflect(connection)
            if self.table is None:
                return None
        table = self.table
        keys = [table.c[name] for name in self.cursor_columns]
        chosen = [table.c[name] for name in self.options.columns] if self.options.columns else list(table.c)
        # The cursor and the key are read even when not listed: they place and name each row.
        needed = [*self.cursor_columns, *([self.options.key_column] if self.options.key_column else [])]
        chosen += [table.c[name] for name in dict.fromkeys(needed) if name not in {c.name for c in chosen}]
        return table, keys, chosen

    def _fetch(self, connection: sa.Connection) -> _Batch:
        """The next batch of rows after the cursor, in cursor order (runs in a worker thread)."""
        selection = self._selection(connection)
        if selection is None:
            return _Batch([], up_to_date=True)
        table, keys, chosen = selection
        # A NULL cursor would stop the reading for good (nothing is greater than NULL).
        query = sa.select(*chosen).where(*(key.is_not(None) for key in keys))
        emitted = Counter([] if self._strict else self.at_cursor)
        if self.cursor is not None:
            query = query.where(self._after_cursor(keys))
        # The rows already emitted at the cursor value come again: ask for as many more.
        limit = self.options.batch_size + emitted.total()
        rows = self._rows(connection, query.order_by(*keys).limit(limit), chosen)
        full = len(rows) == limit
        if full and len(keys) == 1 and not self.cursor_unique:
            rows = self._with_last_value(connection, keys[0], chosen, rows)
        if rows or self.cursor is None:
            self.behind = False  # rows at or after the position
        else:
            self._check_position(connection, table)
        fresh = []
        for row in rows:
            if emitted[row.identity] and row.cursor == self.cursor:
                emitted[row.identity] -= 1
                continue
            fresh.append(row)
        return _Batch(fresh, up_to_date=not full)

    def _with_last_value(self, connection: sa.Connection, cursor: sa.ColumnClause[Any],
                         chosen: list[sa.ColumnClause[Any]], rows: list[_Row]) -> list[_Row]:
        """`rows` with every row sharing the last one's cursor value, read in one query."""
        last = rows[-1].cursor
        query = sa.select(*chosen).where(cursor == last[0]).limit(_VALUE_MAX_ROWS + 1)
        at_last = self._rows(connection, query, chosen)
        if len(at_last) <= _VALUE_MAX_ROWS:
            return [row for row in rows if row.cursor != last] + at_last
        if last != self.crowded:
            self.crowded = last
            log.warning("source %s: more than %d rows of table %s share %s %s: without a tiebreak_column they are "
                        "read again in each batch, which grows slow; a tiebreak_column (a unique column such as "
                        "the primary key) reads them once", self.source.name, _VALUE_MAX_ROWS, self.options.table,
                        self.options.cursor_column, last[0], extra=self.log_fields)
        return rows

    def _rows(self, connection: sa.Connection, query: sa.Select[Any],
              chosen: list[sa.ColumnClause[Any]]) -> list[_Row]:
        try:
            return self._read(connection, query)
        except DataError as exc:
            # A value the driver cannot give as Python (PostgreSQL's timestamp 'infinity', a date
            # before year 1): this batch is read as text, rather than the query failing for ever.
            # The cursor columns keep their type, since the next query compares them.
            self.error("value", "a value cannot be read (%s); reading this batch as text",
                       str(exc.orig).splitlines()[0] if exc.orig else exc)
            connection.rollback()
            as_text = query.with_only_columns(
                *(c if c.name in self.cursor_columns else sa.cast(c, sa.String).label(c.name) for c in chosen))
            return self._read(connection, as_text)

    def _read(self, connection: sa.Connection, query: sa.Select[Any]) -> list[_Row]:
        """The query's rows a few at a time (a server-side cursor where the driver has one), each oversize
        row cut to its dead letter as it comes: memory holds a batch of rows of sensible size."""
        rows: list[_Row] = []
        result = connection.execution_options(stream_results=True).execute(query)
        size, read_bytes = 1, 0
        while chunk := result.fetchmany(size):
            for row in chunk:
                rows.append(self._row(row._mapping))
                read_bytes += rows[-1].size
            self.progress_at = time.monotonic()
            # As many rows as fill a chunk, by the size of those read so far.
            size = max(1, min(_CHUNK_MAX_ROWS, _CHUNK_BYTES * len(rows) // max(1, read_bytes)))
        return rows

    def _row(self, values: Any) -> _Row:
        record = {name: json_value(value) for name, value in values.items()}
        raw = raw_json(record)
        key_column = self.options.key_column
        # As text, so a key read as text (a batch with an unreadable value) is the same key.
        identity = str(record.get(key_column)) if key_column else hashlib.sha256(raw).hexdigest()[:32]
        cursor = tuple(values.get(name) for name in self.cursor_columns)  # (a key read alone has none)
        if len(raw) > MAX_RECORD_BYTES:
            return _Row(cursor, None, raw[:MAX_DEAD_LETTER_RAW], len(raw), identity)
        return _Row(cursor, record, raw, len(raw), identity)

    def _fetch_null_rows(self, connection: sa.Connection) -> _NullRows | None:
        """The rows with a NULL cursor, told apart by identity, so a row fixed and another added is seen
        (runs in a worker thread). With a key_column only the keys are read until a new one shows; without,
        the rows are read whole, to be hashed."""
        selection = self._selection(connection)
        if selection is None:
            return None
        table, keys, chosen = selection
        options = self.options
        order = [table.c[name] for name in (options.key_column, options.tiebreak_column)
                 if name and name not in self.cursor_columns[:1]]
        query = (sa.select(*chosen).where(sa.or_(*(key.is_(None) for key in keys))).order_by(*order)
                 .limit(_NULL_ROWS_KEPT + 1))
        probe = [table.c[options.key_column]] if options.key_column else chosen
        found = self._rows(connection, query.with_only_columns(*probe), probe)
        identities = [row.identity for row in found[:_NULL_ROWS_KEPT]]
        present = Counter(identities)
        kept = (self.null_letters + Counter(identities[:self.null_legacy])) & present
        fresh = present - kept
        if fresh and options.key_column:
            found = self._rows(connection, query, chosen)
        new: list[_Row] = []
        for row in found[:_NULL_ROWS_KEPT]:
            if fresh[row.identity] and len(new) < options.batch_size:
                fresh[row.identity] -= 1
                new.append(row)
        return _NullRows(kept, new, len(found) > _NULL_ROWS_KEPT)

    @property
    def _strict(self) -> bool:
        """Whether reading goes on after the cursor value rather than from it: a unique cursor has no more
        rows at its value, and a position saved without the rows emitted at its value had read them all."""
        return self.cursor_unique or self.at_cursor is None

    def _after_cursor(self, keys: list[sa.ColumnClause[Any]]) -> sa.ColumnElement[bool]:
        """(cursor, tiebreak) > saved, spelled out so every dialect can use an index; a cursor alone
        from its saved value on, the rows emitted at it being skipped."""
        assert self.cursor is not None
        if len(keys) == 1:
            return keys[0] > self.cursor[0] if self._strict else keys[0] >= self.cursor[0]
        first, second = keys
        return sa.or_(first > self.cursor[0], sa.and_(first == self.cursor[0], second > self.cursor[1]))

    async def _publish_rows(self, publisher: Publisher, rows: list[_Row]) -> None:
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        for row in rows:
            if row.record is None:
                failures.append((f"record is oversize: {row.size} bytes > {MAX_RECORD_BYTES}", row.raw))
                continue
            event = self.judge(row.record, row.raw, batch, failures)
            if event is not None and not self.options.id_field:
                batch[-1] = event.model_copy(update={"event_id": stable_id(self.source.name, *self._version(row))})
        await self.publish(publisher, batch, failures)
        last = rows[-1].cursor
        if len(self.cursor_columns) == 1:
            at_last = [row.identity for row in rows if row.cursor == last]
            self.at_cursor = [*(self.at_cursor or []), *at_last] if last == self.cursor else at_last
        self.cursor = last
        self._save()

    def _version(self, row: _Row) -> tuple[Any, ...]:
        """What names a version of the row: its key (or tie-breaker) and cursor value. A cursor alone names
        it only when unique; else the row's content tells apart the rows sharing a value."""
        assert row.record is not None
        options = self.options
        cursor = row.record.get(options.cursor_column)
        key_column = options.key_column or options.tiebreak_column
        if key_column is None:
            return (cursor,) if self.cursor_unique else (cursor, row.identity)
        return (cursor,) if key_column == options.cursor_column else (row.record.get(key_column), cursor)

    async def _publish_null_rows(self, publisher: Publisher, nulls: _NullRows) -> None:
        if nulls.more and not self.null_overflow:
            log.warning("source %s: more than %d rows of table %s have a NULL cursor: the first %d (in key order) "
                        "are dead letters, the others wait until some are fixed or deleted", self.source.name,
                        _NULL_ROWS_KEPT, self.options.table, _NULL_ROWS_KEPT, extra=self.log_fields)
        self.null_overflow = nulls.more
        if nulls.new:
            columns = ", ".join(self.cursor_columns)
            reason = f"row has NULL in the cursor column(s) {columns}, so it cannot be read in cursor order"
            await self.publish(publisher, [], [(reason, row.raw) for row in nulls.new])
        # Rows fixed or deleted are forgotten: one that has a NULL cursor again is a new dead letter.
        letters = nulls.kept + Counter(row.identity for row in nulls.new)
        if letters != self.null_letters or self.null_legacy:
            self.null_letters, self.null_legacy = letters, 0
            self._save()

    def _save(self) -> None:
        cursor = None if self.cursor is None else [_encode_cursor(value) for value in self.cursor]
        self.state.save({"cursor": cursor, "at_cursor": self.at_cursor,
                         "null_letters": sorted(self.null_letters.elements()),
                         "table_missing": self.table_missing, **self._reading()})


def _libpq_version(driver: str) -> int:
    """The libpq a psycopg driver uses (tcp_user_timeout needs 12), 0 when unknown."""
    try:
        if driver == "psycopg":
            return int(importlib.import_module("psycopg").pq.version())
        return int(importlib.import_module("psycopg2.extensions").libpq_version())
    except (ImportError, AttributeError):
        return 0
