"""What each table looks like, for code that writes frames into it.

The DDL lives in the numbered migrations; this registry names, per table, the
columns with their ClickHouse types, the event-time column window operations
use, and the key rows are de-duplicated on. Writers take their polars schemas
from here (`TableSpec.frame_schema`); tests/unit/test_table_specs.py proves the
migrations declare the same columns. The tables of later migrations are
declared beside the code that owns them (`schema_features`, `schema_patterns`,
`schema_explain`).
"""

from __future__ import annotations

from qraft_core.store import schema_explain, schema_features, schema_patterns
from qraft_core.store.table_spec import TS, TableSpec, checked_identifier
from qraft_core.store.table_spec import bare_type as bare_type
from qraft_core.store.table_spec import polars_dtype as polars_dtype

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
        partition_by="toYYYYMMDD(timestamp)",
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
        partition_by="toYYYYMMDD(timestamp)",
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

TABLES: dict[str, TableSpec] = {
    checked_identifier(table.name): table
    for table in (*_SPECS, *schema_features.SPECS, *schema_patterns.SPECS, *schema_explain.SPECS)
}


def spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r} (known: {', '.join(sorted(TABLES))})") from None
