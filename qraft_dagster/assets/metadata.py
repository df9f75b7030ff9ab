"""Turning qraft_core's results into Dagster metadata, per partition.

A run may materialize a range of windows; each partition's metadata describes its own
window (counts, findings), read back from the store, and the run's own totals stay under
one `run_summary` entry, labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableRecord, TableSchema
from dagster._core.execution.context.metadata_logging import (
    AssetMetadataHandle,
    OutputMetadataAccumulator,
)

from qraft_core.config import ApiConfig
from qraft_core.store.base import EventStore, Filter
from qraft_core.store.schema import spec
from qraft_dagster.partitions import PARTITION_FORMAT, partition_key

FINDING_COLUMNS = ("pattern_id", "type", "time", "streams", "confidence", "cross_validated", "explorer")


@dataclass(frozen=True)
class RunWindows:
    """The windows a run materializes: [start, end) and the partition key of each window, in order."""

    start: datetime
    end: datetime
    keys: list[str]


def run_windows(context: AssetExecutionContext, interval: timedelta) -> RunWindows:
    """The partition or partition range this run materializes.

    The keys are the window starts from `start` in steps of `interval` (every schedule of `cron_for`
    has windows of one length in UTC): `context.partition_keys` walks the cron schedule again on every
    call, a few milliseconds a window, paid per asset and run.
    """
    start, end = context.partition_time_window
    return windows_between(start, end, interval)


def windows_between(start: datetime, end: datetime, interval: timedelta) -> RunWindows:
    count = int((end - start) / interval)
    return RunWindows(start, end, [partition_key(start + interval * n) for n in range(count)])


def as_metadata(result: dict[str, Any], markdown: dict[str, str] | None = None) -> dict[str, Any]:
    """Scalars stay scalars (plottable in the UI); nested values become JSON; `markdown` is rendered."""
    metadata: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, (dict, list)):
            metadata[key] = MetadataValue.json(value)
        elif isinstance(value, (int, float, str, bool)):
            metadata[key] = value
        else:
            metadata[key] = str(value)
    for key, text in (markdown or {}).items():
        metadata[key] = MetadataValue.md(text)
    return metadata


def run_summary(result: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """The run's totals over all its windows, as one entry that says so."""
    return {"run_summary": MetadataValue.json({"windows_of_run": [str(start), str(end)], **result})}


def rows_by_window(
    store: EventStore, table: str, start: datetime, end: datetime, interval: timedelta, columns: list[str],
    where: Sequence[Filter] = (),
) -> pl.DataFrame:
    """`columns` of the table's rows in [start, end), with `window`: the partition key of each row."""
    time_column = spec(table).time_column
    assert time_column is not None, f"{table} has no time column"
    frame = store.select(table, start=start, end=end, where=where, columns=[time_column, *columns])
    return frame.with_columns(window_keys(frame.schema[time_column], pl.col(time_column), interval))


def window_keys(dtype: pl.DataType, times: pl.Expr, interval: timedelta) -> pl.Expr:
    """`partition_key` of the window of each time, computed by polars: a dense day has millions of rows,
    and a Python call per row cost more than the query."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        times = times.dt.convert_time_zone("UTC")
    return times.dt.truncate(f"{int(interval.total_seconds())}s").dt.strftime(PARTITION_FORMAT).alias("window")


def counts_by_window(
    store: EventStore, table: str, start: datetime, end: datetime, interval: timedelta
) -> dict[str, int]:
    return dict(rows_by_window(store, table, start, end, interval, []).group_by("window").len().iter_rows())


def add_window_counts(
    context: AssetExecutionContext, windows: RunWindows, counts: dict[str, dict[str, int]]
) -> None:
    """Per partition of the run: `{name: count in that window}` (0 where the window had none)."""
    add_partition_metadata(context, windows, {
        key: {name: by_window.get(key, 0) for name, by_window in counts.items()} for key in windows.keys})


def add_partition_metadata(
    context: AssetExecutionContext, windows: RunWindows, by_key: dict[str, dict[str, Any]]
) -> None:
    """Metadata of each partition of the run (`windows`), keyed by partition.

    `context.add_asset_metadata(..., partition_key=key)` lists every partition of the run's range
    again to check the one key (a walk of the cron schedule, ~30 ms for 60 one-minute windows):
    per window and asset that was most of a dense replay's orchestration time. The keys are checked
    here against the run's partitions once, and the metadata goes where that call puts it.
    """
    outside = sorted(set(by_key) - set(windows.keys))
    if outside:
        raise ValueError(f"metadata for partitions this run does not target: {', '.join(outside)}")
    step = context.get_step_execution_context()
    # What add_asset_metadata updates (Dagster 1.13). Its `with_additional_asset_metadata` copies
    # everything accumulated on each call, quadratic in the run's partitions: the mapping is built once.
    accumulated = dict(step._metadata_accumulator.per_output_metadata)  # noqa: SLF001
    for key, metadata in by_key.items():
        handle = AssetMetadataHandle(asset_key=context.assets_def.key, partition_key=key)
        accumulated[handle] = {**accumulated.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=accumulated)  # noqa: SLF001


def explorer_url(api: ApiConfig, pattern_id: str) -> str:
    """The finding's page in the explorer served by `qraft api`."""
    # A server listening on every interface is reached locally through the loopback address.
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
    return f"http://{host}:{api.port}/#/finding/{pattern_id}"


def findings_table(findings: pl.DataFrame, api: ApiConfig) -> MetadataValue:
    """Every finding of a window as a table, each with its explorer link."""
    records = [
        TableRecord({
            "pattern_id": row["pattern_id"], "type": row["type"], "time": str(row["timestamp"]),
            "streams": ", ".join(row["source_streams"]), "confidence": round(float(row["confidence"]), 4),
            "cross_validated": bool(row["cross_validated"]), "explorer": explorer_url(api, row["pattern_id"]),
        })
        for row in findings.sort("timestamp", "pattern_id").iter_rows(named=True)
    ]
    types = {"confidence": "float", "cross_validated": "bool"}
    schema = TableSchema(columns=[TableColumn(name, types.get(name, "string")) for name in FINDING_COLUMNS])
    return MetadataValue.table(records, schema=schema)
