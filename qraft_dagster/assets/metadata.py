"""Turning qraft_core's result dictionaries into Dagster metadata."""

from datetime import datetime
from typing import Any

from dagster import AssetExecutionContext, MetadataValue


def window(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    """[start, end) of the partition or partition range this run materializes."""
    start, end = context.partition_time_window
    return start, end


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
