"""The adapter contract: pull → parse → event time and stable id → publish.

An adapter owns no storage; a record it cannot parse is published as a
dead-letter envelope so the lander records it with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from qraft_core.adapters.parsers import GenericOptions, ParseError, RecordParser, build_parser
from qraft_core.bus.base import Publisher
from qraft_core.config import SourceConfig
from qraft_core.events import EventMeta, StandardEvent, checksum

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = "qraft_dead_letter"
PARSER_VERSION = "qraft-parsers/1"


def dead_letter_envelope(reason: str, raw: bytes | str, source: str) -> bytes:
    """What an adapter publishes for a record it could not turn into an event."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return json.dumps({DEAD_LETTER_KEY: {"reason": reason, "raw": text, "source": source}}).encode()


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


class RecordAdapter:
    """Shared machinery for adapters that read records: parse, batch, publish."""

    type_name: ClassVar[str] = ""
    options_model: ClassVar[type[BaseModel]] = GenericOptions

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
            meta=EventMeta(parser_version=f"{PARSER_VERSION}:{self.source.parser}", raw_checksum=raw_sum),
        )
        self.stats.last_event_time = event.timestamp
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
        return str(exc)
    return f"invalid event: {exc}".replace("\n", "; ")
