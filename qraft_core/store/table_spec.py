"""A table's shape: its columns with their ClickHouse types, what each type is in polars, and its
partition key.

The tables themselves are listed in `qraft_core.store.schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def checked_identifier(name: str) -> str:
    """Identifiers cannot be bound parameters, so they are validated instead.

    >>> checked_identifier("raw_events")
    'raw_events'
    >>> checked_identifier("x; DROP TABLE y")
    Traceback (most recent call last):
    ...
    ValueError: not a valid identifier: 'x; DROP TABLE y'
    """
    if not IDENTIFIER.match(name):
        raise ValueError(f"not a valid identifier: {name!r}")
    return name


def bare_type(ch_type: str) -> str:
    """The parameter type for a column type (without LowCardinality/Nullable wrappers)."""
    for wrapper in ("LowCardinality(", "Nullable("):
        if ch_type.startswith(wrapper):
            ch_type = ch_type[len(wrapper) : -1]
    return ch_type


_POLARS_OF = {
    "String": pl.Utf8,
    "UInt8": pl.UInt8,
    "UInt32": pl.UInt32,
    "UInt64": pl.UInt64,
    "Int64": pl.Int64,
    "Int32": pl.Int32,
    "Float64": pl.Float64,
    "Float32": pl.Float32,
    "DateTime64(3, 'UTC')": pl.Datetime("ms", "UTC"),
}


def polars_dtype(ch_type: str) -> Any:
    bare = bare_type(ch_type)
    if bare.startswith("Array("):
        return pl.List(polars_dtype(bare[len("Array(") : -1]))
    try:
        return _POLARS_OF[bare]
    except KeyError:
        raise ValueError(f"no polars type for ClickHouse type {ch_type!r}") from None


_PARTITION_BY = re.compile(r"^(?P<function>toYYYYMMDD|toYYYYMM)\((?P<column>\w+)\)$")


@dataclass(frozen=True)
class PartitionKey:
    """`PARTITION BY function(column)` over a `DateTime64(3, 'UTC')` column, computed by polars
    as ClickHouse computes it (in the column's time zone, UTC).

    >>> key = PartitionKey.parse("toYYYYMMDD(timestamp)")
    >>> times = pl.DataFrame({"timestamp": [datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ...                                     datetime(2026, 1, 5, tzinfo=UTC)]})
    >>> times.select(key.value()).to_series().to_list()
    [19691231, 20260105]
    >>> key.span(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 4, 14, 23, tzinfo=UTC))
    100
    >>> PartitionKey.parse("toYYYYMM(bar_time)").span(datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    2
    >>> PartitionKey.parse("toMonday(bar_time)")
    Traceback (most recent call last):
    ...
    ValueError: unsupported partition key 'toMonday(bar_time)' (known: toYYYYMMDD(column), toYYYYMM(column))
    """

    function: str
    column: str

    @classmethod
    def parse(cls, expression: str) -> PartitionKey:
        match = _PARTITION_BY.match(expression)
        if match is None:
            raise ValueError(
                f"unsupported partition key {expression!r} (known: toYYYYMMDD(column), toYYYYMM(column))")
        return cls(match["function"], match["column"])

    def value(self) -> pl.Expr:
        """The partition of each row, as `system.parts.partition` names it (a number)."""
        time = pl.col(self.column)
        # Int32 before the arithmetic: a month or day times 100 overflows their Int8.
        month = time.dt.year().cast(pl.Int32) * 100 + time.dt.month().cast(pl.Int32)
        if self.function == "toYYYYMMDD":
            return (month * 100 + time.dt.day().cast(pl.Int32)).alias("partition")
        return month.alias("partition")

    def span(self, first: datetime, last: datetime) -> int:
        """How many partitions [first, last] reaches (UTC datetimes), counting those it holds no row of."""
        first, last = first.astimezone(UTC), last.astimezone(UTC)
        if self.function == "toYYYYMMDD":
            return (last.date() - first.date()).days + 1
        return (last.year - first.year) * 12 + last.month - first.month + 1


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: dict[str, str]
    time_column: str | None = None
    dedup_key: tuple[str, ...] = field(default_factory=tuple)
    # The `PARTITION BY` of the table's DDL (tests/integration/test_store_partitions.py compares
    # the two); inserts are split on it (`ClickHouseStore.insert`).
    partition_by: str | None = None

    def __post_init__(self) -> None:
        key = self.partition_key
        if key is not None and self.columns.get(key.column) != TS:
            raise ValueError(f"table {self.name}: partition column {key.column!r} is not a {TS} column")

    @property
    def partition_key(self) -> PartitionKey | None:
        return PartitionKey.parse(self.partition_by) if self.partition_by else None

    @property
    def frame_schema(self) -> dict[str, Any]:
        """The polars schema of the table's rows: what writers build their frames with."""
        return {name: polars_dtype(ch_type) for name, ch_type in self.columns.items()}


TS = "DateTime64(3, 'UTC')"
