"""What each table looks like, for code that writes frames into it.

The DDL lives in the numbered migrations; this registry names, per table, the
columns with their ClickHouse types, the event-time column window operations
use, and the key rows are de-duplicated on. Writers take their polars schemas
from here (`TableSpec.frame_schema`); tests/unit/test_table_specs.py proves the
migrations declare the same columns.
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

_SPECS = [
    TableSpec(
        "raw_events",
        {
            "event_id": "String",
            "source": "LowCardinality(String)",
            "type": "LowCardinality(String)",
            "timestamp": TS,
            "ingest_time": TS,
            "landed_at": TS,
            "payload": "String",
            "parser_version": "LowCardinality(String)",
            "raw_checksum": "String",
        },
        time_column="timestamp",
        dedup_key=("event_id",),
    ),
    TableSpec(
        "clean_events",
        {
            "event_id": "String",
            "source": "LowCardinality(String)",
            "type": "LowCardinality(String)",
            "timestamp": TS,
            "ingest_time": TS,
            "window_start": TS,
            "payload": "String",
            "repaired": "UInt8",
        },
        time_column="timestamp",
        dedup_key=("event_id",),
    ),
    TableSpec(
        "dead_letters",
        {
            "letter_id": "String",
            "stage": "LowCardinality(String)",
            "source": "LowCardinality(String)",
            "reason": "String",
            "raw": "String",
            "event_id": "String",
            "event_time": "Nullable(" + TS + ")",
            "window_start": "Nullable(" + TS + ")",
            "received_at": TS,
        },
        time_column="window_start",
        dedup_key=("letter_id",),
    ),
    TableSpec(
        "audit_log",
        {
            "ts": TS,
            "actor": "String",
            "action": "LowCardinality(String)",
            "target": "String",
            "before": "String",
            "after": "String",
            "detail": "String",
        },
        time_column="ts",
    ),
    TableSpec(
        "source_registry",
        {
            "name": "String",
            "type": "LowCardinality(String)",
            "owner": "String",
            "schema": "String",
            "retention_days": "UInt32",
            "sensitivity": "LowCardinality(String)",
            "status": "LowCardinality(String)",
            "description": "String",
            "updated_at": TS,
        },
        time_column="updated_at",
        dedup_key=("name",),
    ),
]

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _SPECS}


def _load_domain_specs() -> None:
    # Later migrations' tables are declared beside the code that owns them.
    from qraft_core.store import schema_explain, schema_features, schema_patterns

    for extra in (*schema_features.SPECS, *schema_patterns.SPECS, *schema_explain.SPECS):
        TABLES[checked_identifier(extra.name)] = extra


def spec(table: str) -> TableSpec:
    if len(TABLES) == len(_SPECS):
        _load_domain_specs()
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r} (known: {', '.join(sorted(TABLES))})") from None
