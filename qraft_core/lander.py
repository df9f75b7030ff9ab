"""The lander: the long-running consumer that moves events from the bus into `raw_events`.

It fetches batches (by size and time), validates every line of every message,
inserts good events into `raw_events` and everything else into `dead_letters`
with the reason and the raw bytes, and acknowledges the messages only after
both inserts committed. Store errors are retried with backoff while the bus is
told the batch is still in progress; nothing here ends the process but a stop
request, which is honoured once the batch in hand is landed or handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from pydantic import ValidationError

from qraft_core.adapters.base import DEAD_LETTER_KEY
from qraft_core.bus.base import BusMessage, Consumer
from qraft_core.config import LanderConfig
from qraft_core.events import StandardEvent, checksum, stable_id
from qraft_core.metrics import (
    CONSUMER_LAG,
    EVENTS_DEAD_LETTERED,
    EVENTS_LANDED,
    LAND_BATCH_SECONDS,
    STORE_RETRIES,
)
from qraft_core.scheduling import floor_to
from qraft_core.store.base import EventStore, StoreError

log = logging.getLogger(__name__)

RAW_COLUMNS = ("event_id", "source", "type", "timestamp", "ingest_time", "payload", "parser_version", "raw_checksum")


@dataclass
class LandedBatch:
    """What one batch of messages turned into."""

    raw_events: pl.DataFrame
    dead_letters: pl.DataFrame

    @property
    def landed(self) -> int:
        return self.raw_events.height

    @property
    def dead_lettered(self) -> int:
        return self.dead_letters.height


def _source_of(subject: str, prefix: str) -> str:
    return subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else subject


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for problem in exc.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "<event>"
        parts.append(f"{key}: {problem['msg']}")
    return "invalid event: " + "; ".join(parts)


def land_batch(
    messages: Sequence[tuple[str, bytes]],
    *,
    subject_prefix: str = "qraft.raw",
    max_payload_bytes: int = 256 * 1024,
    interval: timedelta = timedelta(minutes=1),
    now: datetime | None = None,
) -> LandedBatch:
    """Split (subject, data) messages into raw-event rows and dead-letter rows.

    Every message holds newline-delimited events. Each line is judged on its
    own, so one bad line never costs its neighbours.

    >>> good = (b'{"event_id":"e1","source":"s","type":"t","timestamp":"2026-01-05T00:00:01Z",'
    ...         b'"ingest_time":"2026-01-05T00:00:02Z","payload":{"p":1},"meta":{"parser_version":"v1"}}')
    >>> batch = land_batch([("qraft.raw.s", good + b"\\n{oops")])
    >>> batch.landed, batch.dead_lettered
    (1, 1)
    >>> batch.dead_letters["reason"][0]
    'malformed JSON: Expecting property name enclosed in double quotes'
    """
    landed_at = now or datetime.now(UTC)
    raw: dict[str, list[Any]] = {name: [] for name in RAW_COLUMNS}
    dead: list[dict[str, Any]] = []
    seen: set[str] = set()

    def reject(subject_source: str, reason: str, line: bytes, index: int, event: dict[str, Any] | None = None) -> None:
        event_time = _iso_utc(event.get("timestamp")) if event else None
        dead.append(
            {
                "letter_id": stable_id("lander", subject_source, checksum(line), index),
                "stage": "land",
                "source": subject_source,
                "reason": reason,
                "raw": line.decode("utf-8", "replace"),
                "event_id": str((event or {}).get("event_id", ""))[:256],
                "event_time": event_time,
                "window_start": floor_to(event_time, interval) if event_time else None,
                "received_at": landed_at,
            }
        )

    for subject, data in messages:
        subject_source = _source_of(subject, subject_prefix)
        for index, line in enumerate(data.split(b"\n")):
            if not line.strip():
                continue
            if len(line) > max_payload_bytes:
                reject(subject_source, f"oversize: {len(line)} bytes > {max_payload_bytes}", line[:4096], index)
                continue
            try:
                document, finite = _parse_line(line)
            except RecursionError:
                reject(subject_source, "malformed JSON: nested too deeply", line, index)
                continue
            except ValueError as exc:
                reject(subject_source, f"malformed JSON: {str(exc).split(':')[0]}", line, index)
                continue
            if not isinstance(document, dict):
                reject(subject_source, f"not an event object: {type(document).__name__}", line, index)
                continue
            if DEAD_LETTER_KEY in document:
                envelope = document[DEAD_LETTER_KEY] or {}
                if not isinstance(envelope, dict):
                    reject(subject_source, "adapter: malformed dead-letter envelope", line, index)
                    continue
                reason = f"adapter: {envelope.get('reason', 'unparseable record')}"
                reject(subject_source, reason, str(envelope.get("raw", "")).encode(), index)
                continue
            row = well_formed_row(document) if finite else None
            if row is None:
                # Not plainly well formed: the model decides, and names what is wrong.
                try:
                    event = StandardEvent.model_validate(document)
                except ValidationError as exc:
                    reject(subject_source, _validation_reason(exc), line, index, document)
                    continue
                row = (event.event_id, event.source, event.type, event.timestamp, event.ingest_time,
                       json.dumps(event.payload, separators=(",", ":"), sort_keys=True),
                       event.meta.parser_version, event.meta.raw_checksum)
            if row[1] != subject_source:
                reject(subject_source, f"source {row[1]!r} published on subject {subject!r}", line, index, document)
                continue
            if row[0] in seen:
                continue  # the same event twice in one batch: ReplacingMergeTree would collapse it anyway
            seen.add(row[0])
            for column, value in zip(RAW_COLUMNS, row, strict=True):
                raw[column].append(value)
    raw_frame = pl.DataFrame(raw, schema_overrides=_TIME_SCHEMA).with_columns(
        pl.lit(landed_at).dt.cast_time_unit("ms").alias("landed_at")
    )
    dead_frame = pl.DataFrame(dead, schema=_DEAD_SCHEMA)
    return LandedBatch(raw_frame, dead_frame)


_EVENT_FIELDS = frozenset(StandardEvent.model_fields)
_SOURCE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class _NonFinite(ValueError):
    """A NaN, an Infinity or an overflowing float in a line (the model names where)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _NonFinite(text)
    return value


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def _parse_line(line: bytes) -> tuple[Any, bool]:
    """(document, all numbers finite?); raises ValueError/RecursionError for malformed JSON."""
    try:
        return json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float), True
    except _NonFinite:
        return json.loads(line), False


def _iso_utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def well_formed_row(document: dict[str, Any]) -> tuple[Any, ...] | None:
    """The raw_events row of an event in the shape adapters publish, checked without the model.

    The document must come from a parse that rejected non-finite numbers. Anything
    unusual (other time formats, odd types) returns None, and
    `StandardEvent` then accepts it or says why not; so this path only ever accepts what the
    model accepts, ~4x faster.

    >>> well_formed_row({"event_id": "e", "source": "s", "type": "t", "timestamp": "2026-01-05T00:00:00Z",
    ...     "ingest_time": "2026-01-05T00:00:01Z", "payload": {"b": 1, "a": "x"},
    ...     "meta": {"parser_version": "v1"}})[5]
    '{"a":"x","b":1}'
    >>> well_formed_row({"event_id": "e", "source": "s", "type": "t", "timestamp": 1767571200,
    ...     "ingest_time": "2026-01-05T00:00:01Z", "payload": {}, "meta": {"parser_version": "v1"}}) is None
    True
    """
    if document.keys() != _EVENT_FIELDS:
        return None
    event_id, source, kind, meta, payload = (
        document["event_id"], document["source"], document["type"], document["meta"], document["payload"]
    )
    if not (
        isinstance(event_id, str) and 0 < len(event_id) <= 256
        and isinstance(source, str) and _SOURCE_NAME.fullmatch(source)
        and isinstance(kind, str) and 0 < len(kind) <= 64
        and isinstance(payload, dict) and isinstance(meta, dict)
        and isinstance(meta.get("parser_version"), str) and meta["parser_version"]
        and isinstance(meta.get("raw_checksum", ""), str)
    ):
        return None
    timestamp, ingest_time = _iso_utc(document["timestamp"]), _iso_utc(document["ingest_time"])
    if timestamp is None or ingest_time is None:
        return None
    return (event_id, source, kind, timestamp, ingest_time,
            json.dumps(payload, separators=(",", ":"), sort_keys=True),
            meta["parser_version"], meta.get("raw_checksum", ""))


_TIME_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("ms", "UTC"),
    "ingest_time": pl.Datetime("ms", "UTC"),
}
_DEAD_SCHEMA: dict[str, pl.DataType] = {
    "letter_id": pl.Utf8(),
    "stage": pl.Utf8(),
    "source": pl.Utf8(),
    "reason": pl.Utf8(),
    "raw": pl.Utf8(),
    "event_id": pl.Utf8(),
    "event_time": pl.Datetime("ms", "UTC"),
    "window_start": pl.Datetime("ms", "UTC"),
    "received_at": pl.Datetime("ms", "UTC"),
}


@dataclass
class LanderStats:
    batches: int = 0
    messages: int = 0
    landed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class Lander:
    """Consumes the bus into the store; see the module docstring for the guarantees."""

    def __init__(
        self,
        consumer: Consumer,
        store: EventStore,
        config: LanderConfig,
        *,
        subject_prefix: str = "qraft.raw",
        interval: timedelta = timedelta(minutes=1),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.config = config
        self.subject_prefix = subject_prefix
        self.interval = interval
        self.clock = clock
        self.stats = LanderStats()

    async def _collect(self, stop: asyncio.Event) -> list[BusMessage]:
        """Messages until the batch is full (by lines) or its time is up."""
        deadline = self.clock() + self.config.batch_timeout_ms / 1000
        taken: list[BusMessage] = []
        lines = 0
        while lines < self.config.batch_size and not stop.is_set():
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            # Messages carry whole batches of events: ask for as many messages as the lines still
            # wanted need at the lines per message seen so far, so a pull never floods the client.
            # The first pull takes one message to learn their size.
            per_message = lines / len(taken) if taken else float(self.config.batch_size)
            wanted = max(1, min(1000, int((self.config.batch_size - lines) / per_message)))
            fetched = await self.consumer.fetch(wanted, max(remaining, 0.05))
            taken.extend(fetched)
            lines += sum(m.data.count(b"\n") + 1 for m in fetched)
        return taken

    def _write(self, batch: LandedBatch) -> None:
        with self.store.session():
            self.store.insert("raw_events", batch.raw_events)
            self.store.insert("dead_letters", batch.dead_letters)

    async def _write_with_retry(self, batch: LandedBatch, messages: list[BusMessage], stop: asyncio.Event) -> bool:
        """True once written; False if a stop arrived while the store stayed unavailable."""
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(self._write, batch)
                return True
            except StoreError as exc:
                self.stats.retries += 1
                STORE_RETRIES.inc()
                log.warning("store write failed (%s); retrying in %.1fs", exc, delay)
                if stop.is_set():
                    return False
                # Keep the bus from redelivering what is still being landed.
                await asyncio.gather(*(m.in_progress() for m in messages), return_exceptions=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.config.retry_max_s)

    async def land_once(self, stop: asyncio.Event | None = None) -> int:
        """Fetch, land and acknowledge one batch; returns the number of messages handled."""
        stop = stop or asyncio.Event()
        messages = await self._collect(stop)
        if not messages:
            return 0
        started = time.perf_counter()
        batch = land_batch(
            [(m.subject, m.data) for m in messages],
            subject_prefix=self.subject_prefix,
            max_payload_bytes=self.config.max_payload_bytes,
            interval=self.interval,
        )
        if not await self._write_with_retry(batch, messages, stop):
            await asyncio.gather(*(m.nak() for m in messages), return_exceptions=True)
            return 0
        await asyncio.gather(*(m.ack() for m in messages))
        LAND_BATCH_SECONDS.observe(time.perf_counter() - started)
        self._count(batch, len(messages))
        return len(messages)

    def _count(self, batch: LandedBatch, messages: int) -> None:
        self.stats.batches += 1
        self.stats.messages += messages
        self.stats.landed += batch.landed
        self.stats.dead_lettered += batch.dead_lettered
        for source, n in batch.raw_events.group_by("source").len().iter_rows():
            EVENTS_LANDED.labels(source).inc(n)
            self.stats.by_source[source] = self.stats.by_source.get(source, 0) + n
        for source, n in batch.dead_letters.group_by("source").len().iter_rows():
            EVENTS_DEAD_LETTERED.labels(source).inc(n)

    async def run(self, stop: asyncio.Event, until_idle: bool = False) -> LanderStats:
        """Land until `stop` is set (or, with `until_idle`, until nothing is pending)."""
        while not stop.is_set():
            try:
                handled = await self.land_once(stop)
                if handled == 0:
                    lag = await self.consumer.pending()
                    CONSUMER_LAG.set(lag)
                    if until_idle and lag == 0:
                        break
            except Exception:  # a long-running process outlives any one bad batch
                log.exception("landing a batch failed; the bus will redeliver it")
                await asyncio.sleep(1.0)
        return self.stats
