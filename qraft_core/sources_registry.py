"""The source registry: governance metadata per source, and its live status.

`source_registry` holds who owns a source, what it carries, how long it is
kept and how sensitive it is; `source_status` adds what the data says: the
latest event landed, the recent event rate and the dead letters it caused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from qraft_core.config import SourceConfig
from qraft_core.store.base import EventStore

RATE_WINDOW = timedelta(minutes=5)


def source_schema(source: SourceConfig) -> str:
    """What the source's events look like, as far as the configuration says.

    >>> source_schema(SourceConfig(name="n", type="file", parser="generic",
    ...     options={"event_type": "headline", "required": ["id"]}))
    '{"event_type": "headline", "parser": "generic", "required": ["id"]}'
    """
    options = source.options
    schema: dict[str, Any] = {"parser": source.parser, "event_type": options.get("event_type", source.parser)}
    if options.get("required"):
        schema["required"] = list(options["required"])
    if options.get("fields"):
        schema["fields"] = sorted(options["fields"])
    return json.dumps(schema, sort_keys=True)


def upsert_sources(
    store: EventStore,
    sources: Sequence[SourceConfig],
    status: str | Mapping[str, str] = "configured",
    now: datetime | None = None,
) -> int:
    """Write (or replace) the registry rows of `sources`; `status` per name or for all."""
    if not sources:
        return 0
    at = now or datetime.now(UTC)
    statuses = {
        s.name: status if isinstance(status, str) else status.get(s.name, "configured") for s in sources
    }
    frame = pl.DataFrame({
        "name": [s.name for s in sources],
        "type": [s.type for s in sources],
        "owner": [s.owner for s in sources],
        "schema": [source_schema(s) for s in sources],
        "retention_days": [s.retention_days for s in sources],
        "sensitivity": [s.sensitivity for s in sources],
        "status": [statuses[s.name] for s in sources],
        "description": [s.description for s in sources],
        "updated_at": [at] * len(sources),
    })
    return store.insert("source_registry", frame)


def source_status(
    store: EventStore, sources: Sequence[SourceConfig], now: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per configured source: metadata, status, last event time, events/s over 5 min, errors."""
    at = now or datetime.now(UTC)
    with store.session():
        registered = store.select("source_registry", columns=["name", "status"])
        last_event = store.max_time("raw_events", "source")
        recent = store.count("raw_events", start=at - RATE_WINDOW, end=at, group_by="source")
        errors = store.count("dead_letters", group_by="source")
    status_by_name = dict(zip(registered["name"].to_list(), registered["status"].to_list(), strict=True))
    rows = []
    for source in sources:
        default = "configured" if source.enabled else "disabled"
        last = last_event.get(source.name)
        rows.append({
            "name": source.name,
            "type": source.type,
            "enabled": source.enabled,
            "owner": source.owner,
            "sensitivity": source.sensitivity,
            "retention_days": source.retention_days,
            "status": status_by_name.get(source.name, default) if source.enabled else "disabled",
            "last_event_time": last.astimezone(UTC).isoformat() if last is not None else None,
            "events_per_s": round(recent.get(source.name, 0) / RATE_WINDOW.total_seconds(), 3),
            "errors": errors.get(source.name, 0),
        })
    return rows
