"""NATS JetStream: the real bus. The only module family that imports nats."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from qraft_core.bus.base import (
    BusCannotStore,
    BusError,
    BusStopped,
    BusUnavailable,
    StoredMessage,
    StreamSettings,
    batch_message_id,
    encode_events,
    split_to_fit,
)
from qraft_core.events import StandardEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

# Room for the headers (the message id) next to the payload in one protocol message.
HEADER_ALLOWANCE = 1024
# How much of an oversized event its dead letter keeps.
OVERSIZED_EXCERPT = 4096
# Publishes a restore has in flight at once: enough to hide the round trip, few enough to keep
# a failure's unknown outcome small.
RESTORE_WINDOW = 256
# Errors no retry can fix: the request itself is wrong, or what it names does not exist.
PERMANENT_ERRORS = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError,
                    BadRequestError, NotFoundError)
# JetStream's answers when it has no room to store (insufficient resources, memory or storage resources
# exceeded): a full disk or store limit, which no retry frees.
NO_ROOM_CODES = frozenset({10023, 10028, 10047})
# Publishes timed out in a row while the stream's leader answered at once: the server is up but
# stores nothing (nats-server answers no publish after a write error such as a full disk, even
# once space is freed). An election or a reconnect makes the stream itself unanswering instead.
STALLED_PUBLISHES = 3


def seed_urls(url: str | Sequence[str]) -> list[str]:
    """Server URLs from a comma-separated string or a list.

    >>> seed_urls("nats://a:4222, nats://b:4222,")
    ['nats://a:4222', 'nats://b:4222']
    """
    parts = url.split(",") if isinstance(url, str) else list(url)
    return [part.strip() for part in parts if part.strip()]


class NatsMessage:
    __slots__ = ("_msg", "data", "sequence", "subject")

    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        try:
            self.sequence: int | None = msg.metadata.sequence.stream
        except nats.errors.NotJSMessageError:  # no JetStream ack subject to read it from
            self.sequence = None

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float = 0.0) -> None:
        await self._msg.nak(delay=delay_s or None)

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class NatsBus:
    """Publisher and durable pull consumer on one JetStream stream."""

    def __init__(self, url: str | Sequence[str], settings: StreamSettings | None = None) -> None:
        self.servers = seed_urls(url)
        self.settings = settings or StreamSettings()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._consumer: api.ConsumerConfig = api.ConsumerConfig()  # set by `subscribe`
        self._last_error_log = 0.0

    @property
    def url(self) -> str:
        return ",".join(self.servers)

    async def _connection_error(self, exc: Exception) -> None:
        # nats-py reports every failed attempt; one line per 10 s is enough to see it is waiting.
        if time.monotonic() - self._last_error_log > 10:
            self._last_error_log = time.monotonic()
            log.warning("NATS at %s: %s: %s (retrying)", self.url, type(exc).__name__, exc)

    async def connect(self, stop: asyncio.Event | None = None, wait_s: float | None = None) -> NatsBus:
        """Connect (retrying while no server answers) until connected, `stop` is set or `wait_s` passes."""
        connecting = asyncio.ensure_future(nats.connect(
            servers=self.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
            error_cb=self._connection_error,
        ))
        waits: set[asyncio.Future[Any]] = {connecting}
        stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopping is not None:
            waits.add(stopping)
        done, _ = await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        if stopping is not None:
            stopping.cancel()
        if connecting not in done:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            if stop is not None and stop.is_set():
                raise BusStopped(f"stopped while connecting to NATS at {self.url}")
            raise BusUnavailable(f"no NATS server answered at {self.url} within {wait_s}s")
        self._nc = connecting.result()
        self._js = self._nc.jetstream()
        await self.ensure_stream()
        return self

    async def close(self) -> None:
        if self._nc is not None:
            # Flush what was published and acknowledged; a drain can stall on a pull subscription.
            try:
                await self._nc.flush(timeout=10)
            except nats.errors.Error as exc:
                log.warning("NATS flush on close failed: %s", exc)
            await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> NatsBus:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def clustered(self) -> bool:
        """Whether the connected server is part of a cluster (its INFO names one)."""
        return bool(self._nc._server_info.get("cluster"))

    @property
    def message_limit(self) -> int:
        """The largest payload one publish may carry: the server's and the stream's limit, less headers."""
        return min(int(self._nc.max_payload), self.settings.max_msg_bytes) - HEADER_ALLOWANCE

    async def ensure_stream(self) -> None:
        """Create the stream, or update the settings Qraft owns without lowering the replicas."""
        settings = self.settings
        try:
            existing: api.StreamConfig | None = (
                await self._retrying("reading the stream", lambda: self._js.stream_info(settings.stream))
            ).config
        except NotFoundError:
            existing = None
        wanted = settings.replicas or (3 if self.clustered else 1)
        ours: dict[str, Any] = {
            "subjects": [settings.wildcard],
            "duplicate_window": float(settings.duplicate_window_s),
            "max_msg_size": min(int(self._nc.max_payload), settings.max_msg_bytes),
            "num_replicas": max(wanted, (existing.num_replicas or 1) if existing else 1),
        }
        if settings.max_age_s:
            ours["max_age"] = float(settings.max_age_s)
        if settings.max_bytes:
            ours["max_bytes"] = settings.max_bytes
        if existing is None:
            created = api.StreamConfig(name=settings.stream, storage=api.StorageType.FILE, **ours)
            await self._retrying("creating the stream", lambda: self._js.add_stream(created))
            return
        if existing.num_replicas and existing.num_replicas > wanted:
            log.info("stream %s keeps its %d replicas (nats.replicas asks for %d)",
                     settings.stream, existing.num_replicas, wanted)
        updated = dataclasses.replace(existing, **ours)
        if updated != existing:
            await self._retrying("updating the stream", lambda: self._js.update_stream(updated))

    async def stream_config(self) -> api.StreamConfig:
        return (await self._js.stream_info(self.settings.stream)).config

    # -- publishing -----------------------------------------------------
    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        """Publish in as few messages as fit the server's limit; an event too big on its own is dead-lettered."""
        if not events:
            return
        lines = [event.to_json_bytes() for event in events]
        limit = self.message_limit
        for start, end in split_to_fit(lines, limit):
            part = events[start:end]
            if end - start == 1 and len(lines[start]) > limit:
                await self.publish_raw(source, oversized_dead_letter(part[0], len(lines[start]), limit, source))
                continue
            data = lines[start] if end - start == 1 else encode_events(part)
            await self.publish_raw(source, data, batch_message_id(part))

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        """Publish and wait for the stream to store it, retrying through failovers for `publish_timeout_s`.

        A retried message keeps its id, so one the stream did store before the error is dropped as a repeat.
        """
        headers = {"Nats-Msg-Id": message_id} if message_id else None
        subject = self.settings.subject(source)
        await self._retrying(f"publish to {subject}",
                             lambda: self._js.publish(subject, data, headers=headers, timeout=5))

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()`, retried with backoff while the error is transient (no leader, no responders, reconnecting)."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        delay, stalled = 0.1, 0
        while True:
            try:
                return await call()
            except PERMANENT_ERRORS:
                raise
            except (TimeoutError, nats.errors.Error) as exc:
                if self._nc is None or self._nc.is_closed:
                    raise
                if getattr(exc, "err_code", None) in NO_ROOM_CODES:
                    raise BusCannotStore(
                        f"{what} refused: the NATS server has no room to store messages "
                        f"({getattr(exc, 'description', exc)}, JetStream error {getattr(exc, 'err_code', '')}); "
                        "free space on its store's disk or raise its max_file_store"
                    ) from exc
                stalled = stalled + 1 if isinstance(exc, TimeoutError) and await self._leader_answers() else 0
                if stalled >= STALLED_PUBLISHES:
                    raise BusCannotStore(
                        f"{what}: the stream {self.settings.stream} answers but stored none of {stalled} "
                        "attempts; its server failed to write (a full or read-only disk: its log names it), "
                        "and stores nothing more until it is restarted with room on its disk"
                    ) from exc
                if time.monotonic() + delay > deadline:
                    raise BusUnavailable(f"{what} failed for {self.settings.publish_timeout_s}s: {exc!r}") from exc
                log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _leader_answers(self) -> bool:
        """Whether the stream's leader answers a request at once."""
        try:
            info = await self._js.stream_info(self.settings.stream)
        except (TimeoutError, nats.errors.Error):
            return False
        return bool(info.cluster and info.cluster.leader)

    # -- consuming ------------------------------------------------------
    async def subscribe(self, durable: str, ack_wait_s: float = 60.0) -> None:
        self._consumer = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_ack_pending=100_000,
            max_deliver=-1,
        )
        self._sub = await self._pull_subscribe()

    async def _pull_subscribe(self) -> Any:
        """The pull subscription on the durable consumer, which is created when it does not exist."""
        return await self._js.pull_subscribe(
            self.settings.wildcard, durable=self._consumer.durable_name, stream=self.settings.stream,
            config=self._consumer,
        )

    async def _consumer_deleted(self) -> bool:
        """Whether the durable consumer is gone (`qraft bus reset`); False when the bus cannot tell now."""
        try:
            await self._sub.consumer_info()
        except NotFoundError:
            return True
        except (TimeoutError, nats.errors.Error):
            pass  # the next failed fetch asks again
        return False

    async def _recreate_consumer(self) -> None:
        """Subscribe again on a new durable consumer with the same settings: it reads the stream from
        its first message, as after a reset (landing is idempotent by event id)."""
        log.warning("consumer %s of stream %s was deleted; re-created it, landing from the stream's first message",
                    self._consumer.durable_name, self.settings.stream)
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()
        self._sub = await self._pull_subscribe()

    async def fetch(self, max_messages: int, timeout_s: float) -> list[NatsMessage]:
        try:
            msgs = await self._sub.fetch(max_messages, timeout=timeout_s)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either, depending on where it waited
            return []
        except nats.errors.Error as exc:
            if self._nc is None or self._nc.is_closed:
                raise
            if await self._consumer_deleted():
                await self._recreate_consumer()
                return []
            # A leader election or a reconnect: nothing was delivered; the next fetch tries again.
            log.warning("fetch from %s failed (%s: %s); retrying", self.settings.stream, type(exc).__name__, exc)
            await asyncio.sleep(min(timeout_s, 1.0))
            return []
        return [NatsMessage(m) for m in msgs]

    async def pending(self) -> int:
        """The consumer's lag (re-created when it was deleted); BusUnavailable when the bus does not answer."""
        try:
            try:
                info = await self._sub.consumer_info()
            except NotFoundError:
                await self._recreate_consumer()
                info = await self._sub.consumer_info()
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailable(f"consumer {self._consumer.durable_name} of stream {self.settings.stream} "
                                 f"did not answer ({type(exc).__name__}: {exc})") from exc
        return int(info.num_pending + info.num_ack_pending)

    async def consumer_pending(self, durable: str) -> int:
        """Messages the named durable consumer has not yet acknowledged (its lag)."""
        info = await self._js.consumer_info(self.settings.stream, durable)
        return int(info.num_pending + info.num_ack_pending)

    async def delete_consumer(self, durable: str) -> bool:
        """Forget the durable consumer, so its next subscription reads the stream from the start."""
        try:
            await self._js.delete_consumer(self.settings.stream, durable)
        except NotFoundError:
            return False
        return True

    async def stream_messages(self) -> int:
        info = await self._js.stream_info(self.settings.stream)
        return int(info.state.messages)


# -- snapshots of a whole stream (`qraft backup` / `qraft restore`) ------------------------

async def _on_one_connection(url: str | Sequence[str], what: str, call: Callable[[Any], Awaitable[T]]) -> T:
    """`call(jetstream)` on a plain connection that fails fast: a backup should say the bus is
    down, not wait for it. NATS errors during the call become a BusError saying what failed."""
    try:
        nc = await nats.connect(servers=seed_urls(url), connect_timeout=5, max_reconnect_attempts=1,
                                allow_reconnect=False)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BusUnavailable(f"no NATS server answered at {url}: {exc!r}") from exc
    try:
        return await call(nc.jetstream())
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"{what} at {url} failed: {str(exc) or type(exc).__name__}") from exc
    finally:
        await nc.close()


async def read_stream(url: str | Sequence[str], stream: str,
                      write: Callable[[StoredMessage], None]) -> dict[str, Any] | None:
    """Hand every message of `stream` to `write`, in sequence order, up to the last one stored when
    the read began; returns the stream's configuration (JSON-ready), or None when there is no stream.

    Messages are fetched one by one with "the next message at or after this sequence", so gaps
    left by deleted or expired messages are skipped without a consumer on the stream.
    """
    return await _on_one_connection(url, f"reading stream {stream}", lambda js: _read_stream(js, stream, write))


async def _read_stream(js: Any, stream: str, write: Callable[[StoredMessage], None]) -> dict[str, Any] | None:
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    sequence, last = int(info.state.first_seq or 1), int(info.state.last_seq or 0)
    while sequence <= last and info.state.messages:
        try:
            message = await js.get_msg(stream, seq=sequence, subject=">", next=True)
        except NotFoundError:  # the remaining messages expired while being read
            break
        if int(message.seq or 0) > last:
            break
        write(StoredMessage(message.subject or "", dict(message.headers or {}), message.data or b""))
        sequence = int(message.seq or 0) + 1
    config = info.config.as_dict()
    # Enum values as their names, so the configuration is plain JSON.
    return {key: getattr(value, "value", value) for key, value in config.items()}


async def write_stream(url: str | Sequence[str], config: dict[str, Any],
                       messages: Iterable[StoredMessage]) -> int:
    """Re-create the stream of `config` (an existing one is deleted first and keeps its replicas if
    it had more) and publish `messages` in order with their headers; returns how many were stored.

    A message the stream drops as a repeat of an id within the duplicate window is not counted.
    """
    return await _on_one_connection(url, f"restoring stream {config.get('name')}",
                                    lambda js: _write_stream(js, config, messages))


async def _write_stream(js: Any, config: dict[str, Any], messages: Iterable[StoredMessage]) -> int:
    wanted = api.StreamConfig.from_response(dict(config))
    try:
        existing = (await js.stream_info(wanted.name)).config
    except NotFoundError:
        existing = None
    if existing is not None:
        wanted.num_replicas = max(wanted.num_replicas or 1, existing.num_replicas or 1)
        await js.delete_stream(wanted.name)
    await js.add_stream(wanted)
    stored = 0
    pending = iter(messages)
    while window := list(itertools.islice(pending, RESTORE_WINDOW)):
        # Tasks created in order write their requests in order, so the sequence is kept; no
        # expected-stream header, which would be stored with the message and change it.
        acks = await asyncio.gather(*(
            js.publish(m.subject, m.data, headers=m.headers or None, timeout=30) for m in window))
        stored += sum(not ack.duplicate for ack in acks)
    return stored


def oversized_dead_letter(event: StandardEvent, size: int, limit: int, source: str) -> bytes:
    """The dead letter of an event larger than one bus message may be: its id and the start of it."""
    from qraft_core.adapters.base import dead_letter_envelope  # adapters import the bus

    reason = f"event {event.event_id!r} is {size} bytes; a bus message holds at most {limit}"
    return dead_letter_envelope(reason, event.to_json_bytes()[:OVERSIZED_EXCERPT], source)
