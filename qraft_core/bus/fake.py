"""An in-memory bus for unit tests: at-least-once, with nak → redelivery."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qraft_core.bus.base import StreamSettings, batch_message_id, encode_events
from qraft_core.events import StandardEvent


@dataclass
class MemoryMessage:
    subject: str
    data: bytes
    bus: MemoryBus
    acked: bool = False
    sequence: int | None = None

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay_s: float = 0.0) -> None:
        self.bus.queue.appendleft(self)

    async def in_progress(self) -> None:
        return None


@dataclass
class MemoryBus:
    """Publisher and consumer in one object.

    >>> import asyncio
    >>> bus = MemoryBus()
    >>> asyncio.run(bus.publish_raw("demo", b"not json"))
    >>> [m.data for m in asyncio.run(bus.fetch(10, 0.01))]
    [b'not json']
    """

    settings: StreamSettings = field(default_factory=StreamSettings)
    queue: deque[MemoryMessage] = field(default_factory=deque)
    seen_ids: set[str] = field(default_factory=set)
    # Every message published, in order: what a new consumer reads from the start.
    stream: list[tuple[str, bytes]] = field(default_factory=list)
    consumers: set[str] = field(default_factory=set)

    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        if events:
            await self.publish_raw(source, encode_events(events), batch_message_id(events))

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        if message_id is not None:
            if message_id in self.seen_ids:
                return
            self.seen_ids.add(message_id)
        subject = self.settings.subject(source)
        self.stream.append((subject, data))
        self.queue.append(MemoryMessage(subject, data, self, sequence=len(self.stream)))

    def published(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The events and the dead letters (their `qraft_dead_letter` bodies) in the queued messages."""
        events: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        for message in self.queue:
            for line in message.data.split(b"\n"):
                body = json.loads(line)
                (letters if "qraft_dead_letter" in body else events).append(body.get("qraft_dead_letter", body))
        return events, letters

    async def subscribe(self, durable: str, ack_wait_s: float = 60.0) -> None:
        """One queue serves every consumer here: subscribing only names the durable consumer."""
        self.consumers.add(durable)

    async def delete_consumer(self, durable: str) -> bool:
        """Forget `durable`; the queue then holds the whole stream again, as a new consumer reads it."""
        if durable not in self.consumers:
            return False
        self.consumers.discard(durable)
        self.queue = deque(MemoryMessage(subject, data, self, sequence=sequence)
                           for sequence, (subject, data) in enumerate(self.stream, 1))
        return True

    async def fetch(self, max_messages: int, timeout_s: float) -> list[MemoryMessage]:
        if not self.queue:
            await asyncio.sleep(timeout_s)
        taken: list[MemoryMessage] = []
        while self.queue and len(taken) < max_messages:
            taken.append(self.queue.popleft())
        return taken

    async def pending(self) -> int:
        return len(self.queue)
