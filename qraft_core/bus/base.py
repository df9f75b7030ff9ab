"""The bus interface: adapters publish standard events, the lander consumes them.

Nothing outside `qraft_core/bus/` imports nats. A message carries one or more
events as newline-delimited JSON, so adapters can publish in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qraft_core.events import StandardEvent, stable_id


class BusError(RuntimeError):
    """The bus could not do what was asked (unreachable, failing, or stopped while waiting)."""


class BusUnavailable(BusError):
    """The bus could not be reached, or kept failing, for longer than allowed."""


class BusCannotStore(BusError):
    """The bus answers but cannot store messages: no room (its disk or store limit is full), or its
    store failed on a write (the server then stores nothing more until restarted). Waiting fixes
    neither, so a publish fails with the reason instead of retrying."""


class BusStopped(BusError):
    """A stop was requested while waiting for the bus."""


def encode_events(events: Sequence[StandardEvent]) -> bytes:
    """Newline-delimited JSON: one event per line."""
    return b"\n".join(event.to_json_bytes() for event in events)


def batch_message_id(events: Sequence[StandardEvent]) -> str:
    """The de-duplication id of a message: the event id itself for one event,
    a digest of all ids for a batch, so a republished batch is dropped by the bus."""
    if len(events) == 1:
        return events[0].event_id
    return stable_id("batch", *(e.event_id for e in events))


def split_to_fit(lines: Sequence[bytes], limit: int) -> list[tuple[int, int]]:
    """Index ranges [i, j) of consecutive lines whose newline-joined size stays within `limit`.

    A line longer than the limit gets a range of its own (the caller dead-letters it).

    >>> split_to_fit([b"aaa", b"bb", b"c", b"dddddd"], 6)
    [(0, 2), (2, 3), (3, 4)]
    """
    ranges: list[tuple[int, int]] = []
    start, size = 0, -1
    for index, line in enumerate(lines):
        if index > start and size + 1 + len(line) > limit:
            ranges.append((start, index))
            start, size = index, -1
        size += 1 + len(line)
    if lines:
        ranges.append((start, len(lines)))
    return ranges


@dataclass(frozen=True)
class StoredMessage:
    """One message as the stream holds it, for snapshots: subject, headers (with `Nats-Msg-Id`), data."""

    subject: str
    headers: dict[str, str]
    data: bytes


class BusMessage(Protocol):
    subject: str
    data: bytes
    # Where the stream holds the message: the same on every redelivery, distinct for each publish
    # (None where the bus does not tell).
    sequence: int | None

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float = 0.0) -> None: ...

    async def in_progress(self) -> None:
        """Tell the bus the message is still being worked on (extends the ack deadline)."""
        ...


class Publisher(Protocol):
    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        """Publish events of one source (split into messages that fit the bus); returns once stored."""
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
    # None: 3 on a cluster, 1 on a single server. An existing stream is never given fewer.
    replicas: int | None = None
    # 0: no limit (an existing stream's own limit is kept).
    max_age_s: int = 0
    max_bytes: int = 0
    # How long a publish keeps retrying through leader elections and reconnects.
    publish_timeout_s: float = 120.0

    def subject(self, source: str) -> str:
        return f"{self.subject_prefix}.{source}"

    @property
    def wildcard(self) -> str:
        return f"{self.subject_prefix}.>"
