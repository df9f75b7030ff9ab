"""A table's shape: its columns with their ClickHouse types, and what each type is in polars.

The tables themselves are listed in `qraft_core.store.schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: dict[str, str]
    time_column: str | None = None
    dedup_key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def frame_schema(self) -> dict[str, Any]:
        """The polars schema of the table's rows: what writers build their frames with."""
        return {name: polars_dtype(ch_type) for name, ch_type in self.columns.items()}


TS = "DateTime64(3, 'UTC')"
