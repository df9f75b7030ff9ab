"""An in-memory `EventStore` for unit tests: same interface, polars frames inside."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import polars as pl

from qraft_core.store.base import STREAM_SEPARATORS, Filter, GroupSummary
from qraft_core.store.clickhouse import _conform
from qraft_core.store.schema import TableSpec, spec

_OPS = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    "in": lambda c, v: c.is_in(list(v)),
    "has": lambda c, v: c.list.contains(v),
    "has_source": lambda c, v: c.list.eval(
        (pl.element() == v) | pl.any_horizontal(pl.element().str.starts_with(v + sep) for sep in STREAM_SEPARATORS)
    ).list.any(),
}


class MemoryStore:
    """`EventStore` kept in memory.

    >>> from datetime import UTC
    >>> store = MemoryStore()
    >>> rows = pl.DataFrame({"ts": [datetime(2026, 1, 5, tzinfo=UTC)], "actor": ["ci"],
    ...     "action": ["replay"], "target": ["w"], "before": [""], "after": [""], "detail": [""]})
    >>> store.insert("audit_log", rows)
    1
    >>> store.count("audit_log")
    {'': 1}
    """

    def __init__(self) -> None:
        self.dsn = "memory://"
        self.tables: dict[str, pl.DataFrame] = {}
        self.writes: dict[str, int] = {}
        self.migrated = False

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    def migrate(self) -> list[str]:
        self.migrated = True
        return []

    def _frame(self, table_spec: TableSpec) -> pl.DataFrame:
        if table_spec.name not in self.tables:
            self.tables[table_spec.name] = pl.DataFrame(schema=table_spec.frame_schema)
        return self.tables[table_spec.name]

    def insert(self, table: str, frame: pl.DataFrame) -> int:
        table_spec = spec(table)
        if frame.height == 0:
            return 0
        self.tables[table] = pl.concat([self._frame(table_spec), _conform(frame, table_spec)])
        self._touch(table)
        return frame.height

    def _touch(self, table: str) -> None:
        self.writes[table] = self.writes.get(table, 0) + 1

    def _mask(self, table_spec: TableSpec, start: Any, end: Any, where: Sequence[Filter]) -> pl.Expr:
        mask = pl.lit(True)
        if start is not None:
            mask &= pl.col(table_spec.time_column) >= start  # type: ignore[arg-type]
        if end is not None:
            mask &= pl.col(table_spec.time_column) < end  # type: ignore[arg-type]
        for item in where:
            mask &= _OPS[item.op](pl.col(item.column), item.value)
        return mask

    def delete(self, table: str, where: Sequence[Filter]) -> None:
        table_spec = spec(table)
        frame = self._frame(table_spec)
        self.tables[table] = frame.filter(~self._mask(table_spec, None, None, where).fill_null(False))
        self._touch(table)

    def replace_window(
        self, table: str, start: datetime, end: datetime, frame: pl.DataFrame, where: Sequence[Filter] = ()
    ) -> int:
        table_spec = spec(table)
        current = self._frame(table_spec)
        self.tables[table] = current.filter(~self._mask(table_spec, start, end, where).fill_null(False))
        self._touch(table)
        return self.insert(table, frame)

    def _rows(self, table: str, start: Any, end: Any, where: Sequence[Filter]) -> pl.DataFrame:
        table_spec = spec(table)
        frame = self._frame(table_spec).filter(self._mask(table_spec, start, end, where))
        if table_spec.dedup_key:
            frame = frame.unique(subset=list(table_spec.dedup_key), keep="last", maintain_order=True)
        return frame

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
        frame = self._rows(table, start, end, where)
        if order_by:
            frame = frame.sort(list(order_by), descending=descending)
        if columns:
            frame = frame.select(list(columns))
        return frame.head(limit) if limit is not None else frame

    def count(
        self,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        where: Sequence[Filter] = (),
        group_by: str | None = None,
    ) -> dict[str, int]:
        frame = self._rows(table, start, end, where)
        if group_by is None:
            return {"": frame.height}
        if isinstance(frame.schema[group_by], pl.List):
            frame = frame.explode(group_by).drop_nulls(group_by)
        grouped = frame.group_by(group_by).len()
        return {str(k): int(n) for k, n in grouped.iter_rows()}

    def summarize(self, table: str, group_by: str, latest: Sequence[str] = ()) -> dict[str, GroupSummary]:
        time = spec(table).time_column
        assert time is not None
        frame = self._rows(table, None, None, ()).sort(time)
        grouped = frame.group_by(group_by).agg(
            pl.len(), pl.col(time).first().alias("_first"), pl.col(time).last().alias("_last"),
            *(pl.col(c).last() for c in latest),
        )
        return {
            str(row[group_by]): GroupSummary(row["len"], row["_first"], row["_last"], {c: row[c] for c in latest})
            for row in grouped.iter_rows(named=True)
        }

    def max_time(self, table: str, group_by: str) -> dict[str, datetime]:
        table_spec = spec(table)
        frame = self._frame(table_spec)
        grouped = frame.group_by(group_by).agg(pl.col(table_spec.time_column).max())  # type: ignore[arg-type]
        return {str(k): t for k, t in grouped.iter_rows()}

    def extent(self, table: str, column: str, where: Sequence[Filter] = ()) -> tuple[Any, Any] | None:
        frame = self._rows(table, None, None, where)
        if frame.height == 0:
            return None
        return frame[column].min(), frame[column].max()

    def table_versions(self, tables: Sequence[str]) -> dict[str, str]:
        return {spec(table).name: str(self.writes.get(spec(table).name, 0)) for table in tables}
