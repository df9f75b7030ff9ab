"""The one interface Qraft uses to talk to its store.

Callers speak in tables, time windows and simple filters; they never learn
whether ClickHouse is embedded (chDB) or a server. `MemoryStore` (fake.py)
implements the same interface for unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import polars as pl

Op = Literal["=", "!=", ">", ">=", "<", "<=", "in", "has", "has_source"]
# A stream is named after its source: `binance_spot`, `binance_spot:BTCUSDT` or `binance_spot.price`.
STREAM_SEPARATORS = (":", ".")

# What DateTime64(3) columns can hold; anything outside would be stored as a different time.
STORE_TIME_RANGE = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))


@dataclass(frozen=True)
class Filter:
    """`column op value`.

    `has` tests membership of value in an array column; `has_source` is true
    when an element of an array of stream names is `value` or a stream of
    the source `value` (`value:...` or `value....`).
    """

    column: str
    op: Op
    value: Any


@dataclass(frozen=True)
class GroupSummary:
    """One group's rows (de-duplicated), the first and last value of the table's time column,
    and the asked-for columns' values in its row at that last time."""

    rows: int
    first: datetime
    last: datetime
    latest: dict[str, Any]


class StoreError(RuntimeError):
    """The store could not do what was asked (transient or not)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or locked right now; retrying may help."""


class EventStore(Protocol):
    dsn: str

    def session(self) -> AbstractContextManager[None]:
        """Hold the store for several calls (one lock, one connection)."""
        ...

    def migrate(self) -> list[str]:
        """Apply pending numbered migrations; returns the ones applied."""
        ...

    def insert(self, table: str, frame: pl.DataFrame) -> int: ...

    def replace_window(
        self,
        table: str,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
        where: Sequence[Filter] = (),
    ) -> int:
        """Delete the rows of [start, end) matching `where`, then insert `frame`."""
        ...

    def delete(self, table: str, where: Sequence[Filter]) -> None: ...

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
        """Rows of [start, end) on the table's time column, de-duplicated on its key."""
        ...

    def count(
        self,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        where: Sequence[Filter] = (),
        group_by: str | None = None,
    ) -> dict[str, int]:
        """Row counts (de-duplicated); keyed by group value, or {"": n} without group_by.

        Grouped by an array column, a row counts once for each of its elements."""
        ...

    def max_time(self, table: str, group_by: str) -> dict[str, datetime]:
        """The latest value of the table's time column per group value."""
        ...

    def summarize(self, table: str, group_by: str, latest: Sequence[str] = ()) -> dict[str, GroupSummary]:
        """Per group value, in one pass over the table: its `GroupSummary`."""
        ...

    def extent(self, table: str, column: str, where: Sequence[Filter] = ()) -> tuple[Any, Any] | None:
        """(min, max) of `column` over the rows matching `where`, or None when there are none."""
        ...

    def table_versions(self, tables: Sequence[str]) -> dict[str, str]:
        """A token per table that changes whenever its rows may have changed (any process's writes)."""
        ...


def iter_windows(start: datetime, end: datetime, step: Any) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive [a, b) windows of `step` covering [start, end)."""
    cursor = start
    while cursor < end:
        yield cursor, min(cursor + step, end)
        cursor += step
