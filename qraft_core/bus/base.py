"""The bus interface: adapters publish standard events, the lander consumes them.

Nothing outside `qraft_core/bus/` imports nats. A message carries one or more
events as newline-delimited JSON, so adapters can publish in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qraft_core.events import StandardEvent, stable_id


def encode_events(events: Sequence[StandardEvent]) -> bytes:
    """Newline-delimited JSON: one event per line."""
    return b"\n".join(event.to_json_bytes() for event in events)


def batch_message_id(events: Sequence[StandardEvent]) -> str:
    """The de-duplication id of a message: the event id itself for one event,
    a digest of all ids for a batch, so a republished batch is dropped by the bus."""
    if len(events) == 1:
        return events[0].event_id
    return stable_id("batch", *(e.event_id for e in events))


class BusMessage(Protocol):
    subject: str
    data: bytes

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float = 0.0) -> None: ...

    async def in_progress(self) -> None:
        """Tell the bus the message is still being worked on (extends the ack deadline)."""
        ...


class Publisher(Protocol):
    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        """Publish events of one source as one message; returns once the bus has stored it."""
        ...

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        """Publish bytes as they are (for bridges and for testing malformed input)."""
        ...


class Consumer(Protocol):
    async def fetch(self, max_messages: int, timeout_s: float) -> Sequence[BusMessage]: ...

    async def pending(self) -> int:
        """Messages the durable consumer has not yet been delivered."""
        ...


@dataclass(frozen=True)
class StreamSettings:
    stream: str = "QRAFT_RAW"
    subject_prefix: str = "qraft.raw"
    duplicate_window_s: int = 3600
    max_msg_bytes: int = 8 * 1024 * 1024

    def subject(self, source: str) -> str:
        return f"{self.subject_prefix}.{source}"

    @property
    def wildcard(self) -> str:
        return f"{self.subject_prefix}.>"
