"""The adapter contract: pull → parse → event time and stable id → publish.

An adapter owns no storage; a record it cannot parse is published as a
dead-letter envelope so the lander records it with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from qraft_core.adapters.parsers import GenericOptions, ParseError, RecordParser, build_parser
from qraft_core.bus.base import Publisher
from qraft_core.config import SourceConfig
from qraft_core.events import (
    DEAD_LETTER_KEY,
    MAX_DEAD_LETTER_RAW,
    MAX_RECORD_BYTES,
    EventMeta,
    StandardEvent,
    checksum,
    dead_letter_envelope,
    safe_text,
)
from qraft_core.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["DEAD_LETTER_KEY", "PARSER_VERSION", "RecordAdapter", "dead_letter_envelope"]

PARSER_VERSION = "qraft-parsers/1"


@dataclass
class AdapterStats:
    published: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    errors: int = 0
    last_event_time: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    type_name: ClassVar[str]
    options_model: ClassVar[type[BaseModel]]

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats: ...


# Adapter classes by the `type` a source names in sources.yaml.
ADAPTERS: Registry[type[Adapter]] = Registry("source type")


def register_adapter(cls: type) -> type:
    """Class decorator: make an adapter available as `type: <cls.type_name>` in sources.yaml."""
    ADAPTERS.add(cls.type_name, cls)  # type: ignore[attr-defined]
    return cls


class RecordAdapter:
    """Shared machinery for adapters that read records: parse, batch, publish."""

    type_name: ClassVar[str] = ""
    options_model: ClassVar[type[BaseModel]] = GenericOptions
    # How the lander judges event times (see `EventMeta.origin`): files are history.
    origin: ClassVar[Literal["live", "backfill"]] = "backfill"

    def __init__(self, source: SourceConfig, options: BaseModel, state_dir: Path) -> None:
        self.source = source
        self.options = options
        self.state_dir = state_dir
        parse_options = GenericOptions.model_validate(
            {k: v for k, v in options.model_dump().items() if k in GenericOptions.model_fields}
        )
        self.parse_record: RecordParser = build_parser(source.parser, parse_options, source.name)
        self.stats = AdapterStats()

    def to_event(self, record: Mapping[str, Any], raw: bytes) -> StandardEvent:
        """Raises ParseError (or pydantic's ValueError) when the record is not an event."""
        raw_sum = checksum(raw)
        parsed = self.parse_record(record, raw_sum)
        event = StandardEvent(
            event_id=parsed.event_id,
            source=self.source.name,
            type=parsed.type,
            timestamp=parsed.timestamp,
            ingest_time=datetime.now(UTC),
            payload=parsed.payload,
            meta=EventMeta(parser_version=f"{PARSER_VERSION}:{self.source.parser}", raw_checksum=raw_sum,
                           origin=self.origin),
        )
        self.stats.last_event_time = event.timestamp
        return event

    def judge(
        self, record: Mapping[str, Any], raw: bytes, batch: list[StandardEvent], failures: list[tuple[str, bytes]]
    ) -> StandardEvent | None:
        """Append the record's event to `batch`, or its reason to `failures`; never raises on content."""
        if len(raw) > MAX_RECORD_BYTES:
            failures.append((f"record is oversize: {len(raw)} bytes > {MAX_RECORD_BYTES}", raw[:MAX_DEAD_LETTER_RAW]))
            return None
        try:
            event = self.to_event(record, raw)
        except Exception as exc:  # noqa: BLE001 - whatever a record holds costs that record only
            failures.append((parse_failure_reason(exc), raw))
            return None
        batch.append(event)
        return event

    async def publish(
        self, publisher: Publisher, batch: list[StandardEvent], failures: list[tuple[str, bytes]]
    ) -> None:
        if batch:
            await publisher.publish_events(self.source.name, batch)
            self.stats.published += len(batch)
        for reason, raw in failures:
            await publisher.publish_raw(self.source.name, dead_letter_envelope(reason, raw, self.source.name))
            self.stats.dead_lettered += 1


def parse_failure_reason(exc: Exception) -> str:
    if isinstance(exc, ParseError):
        return safe_text(exc)
    if isinstance(exc, ValueError):
        return safe_text(f"invalid event: {exc}".replace("\n", "; "))
    return safe_text(f"record cannot be read: {type(exc).__name__}: {exc}".replace("\n", "; "), 500)
