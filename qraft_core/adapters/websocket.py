"""Websocket streams in Binance's formats (trade, aggTrade, kline; plain or combined).

The adapter subscribes to the configured symbols, reconnects with backoff and
jitter when the server closes, stalls or drops the connection, and publishes
a `source_gap` event when a reconnect may have lost trades (the next trade id
of a symbol is not the one after the last seen). Only integer ids that form a
sequence are checked: those the format defines as one (Binance trade and
aggregate ids), and others (a generic `id_field`) once each id seen has been
the one after the last; UUIDs or sparse ids never make a gap. Duplicate or out-of-order
trades keep their stable ids, so the bus and `raw_events` drop the copies.
Only a frame that answers a SUBSCRIBE request of this source (its id, and
nothing but `result` or `error` besides) is taken as a reply; any other frame
is a record. The ids are tracked per key (`s`) for at most `MAX_TRACKED_KEYS`
keys, a long key by its hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from qraft_core.adapters.base import (
    PARSER_VERSION,
    AdapterStats,
    parse_failure_reason,
    register_adapter,
)
from qraft_core.adapters.live import (
    Backoff,
    LiveAdapter,
    NetworkOptions,
    gap_event,
    sleep_or_stop,
    ssl_context,
)
from qraft_core.adapters.parsers import (
    GenericOptions,
    ParsedRecord,
    ParseError,
    RecordParser,
    decode_json_record,
    parse_time,
    register_parser,
)
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError
from qraft_core.events import EventMeta, StandardEvent, checksum

log = logging.getLogger(__name__)


@register_parser("binance_kline")
def binance_kline_parser(options: GenericOptions, source: str) -> RecordParser:
    """Binance kline (candlestick) updates; an open candle is re-sent until it closes.

    Each update is its own event (id ends in the event time `E`); the closing
    update of a candle ends in `closed`, so it is stable across reconnects.
    """

    def parse(record: Mapping[str, Any], raw_checksum: str) -> ParsedRecord:
        data = record.get("data", record)
        kline = data.get("k") if isinstance(data, Mapping) else None
        if not isinstance(data, Mapping) or not isinstance(kline, Mapping):
            raise ParseError("binance kline message has no object 'k'")
        for key, holder in (("s", data), ("E", data), ("t", kline), ("i", kline)):
            if holder.get(key) in (None, ""):
                raise ParseError(f"binance kline message lacks field {key!r}")
        version = "closed" if kline.get("x") else data["E"]
        payload = {**{k: v for k, v in data.items() if k != "k"}, **dict(kline), "s": data["s"]}
        return ParsedRecord(
            f"{source}:{data['s']}:{kline['i']}:{kline['t']}:{version}",
            "kline",
            parse_time(data["E"], "ms"),
            payload,
        )

    return parse


# Close codes the client sends when it refuses a frame: the frame is lost, so it is a dead letter.
_REFUSED_FRAME = {1002: "not valid websocket framing", 1007: "a text frame that is not UTF-8",
                  1009: "a frame larger than max_message_bytes"}

# Per parser: the Binance stream name suffix and the payload key of the exchange's sequential id.
_BINANCE_STREAMS = {"binance_trade": ("trade", "t"), "binance_aggtrade": ("aggTrade", "a")}


class WebSocketOptions(NetworkOptions):
    # Symbols to subscribe to (SUBSCRIBE message); empty when the URL names the streams itself.
    symbols: list[str] = Field(default_factory=list)
    # Stream names to subscribe to; default `<symbol>@<kind>` from the parser (kline: `kline_<interval>`).
    streams: list[str] = Field(default_factory=list)
    kline_interval: str = "1m"
    # Publish a partial batch after this long.
    flush_ms: int = Field(default=200, ge=1)
    # No message for this long (server alive but silent) counts as a stall: reconnect.
    idle_timeout_s: float = Field(default=60.0, gt=0)
    ping_interval_s: float | None = Field(default=20.0, gt=0)
    ping_timeout_s: float | None = Field(default=20.0, gt=0)
    open_timeout_s: float = Field(default=10.0, gt=0)
    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    # permessage-deflate; Binance streams do not use it and it costs CPU per frame.
    compression: bool = False


# All a reply to a SUBSCRIBE request holds.
_REPLY_KEYS = frozenset({"id", "result", "error"})
# The newest SUBSCRIBE request ids whose replies are still awaited (one request per connection).
_AWAITED_REPLIES = 16
# Per-key sequence tracking: keys longer than this are kept as their hash, and at most
# `MAX_TRACKED_KEYS` keys are kept (the least recently seen are forgotten first), so records
# with ever new or huge `s` values cannot grow the memory.
MAX_TRACKED_KEY_CHARS = 128
MAX_TRACKED_KEYS = 10_000


def tracked_key(value: Any) -> str:
    """The key a symbol is tracked under: its text, or the hash of a long one.

    >>> tracked_key("BTCUSDT")
    'BTCUSDT'
    >>> tracked_key("x" * 200)[:7], len(tracked_key("x" * 200))
    ('sha256:', 71)
    """
    text = str(value)
    if len(text) <= MAX_TRACKED_KEY_CHARS:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class StreamStalled(Exception):
    """The server kept the connection open but sent nothing for `idle_timeout_s`."""


@register_adapter
class WebSocketAdapter(LiveAdapter):
    """Streams from a websocket `endpoint` (ws:// or wss://).

    >>> WebSocketAdapter.options_model.model_validate({"symbols": ["BTCUSDT"]}).idle_timeout_s
    60.0
    """

    type_name: ClassVar[str] = "websocket"
    endpoint_prefixes: ClassVar[tuple[str, ...]] = ("ws://", "wss://")
    endpoint_expected: ClassVar[str] = "a ws:// or wss:// URL"
    options_model: ClassVar[type[WebSocketOptions]] = WebSocketOptions  # type: ignore[assignment]
    options: WebSocketOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        self._template = StandardEvent(
            event_id="-", source=self.source.name, type="-", timestamp=datetime.now(UTC),
            ingest_time=datetime.now(UTC), payload={},
            meta=EventMeta(parser_version=f"{PARSER_VERSION}:{self.source.parser}", origin=self.origin),
        )
        self.sequence_key = _BINANCE_STREAMS.get(self.source.parser, ("", self.options.id_field or ""))[1]
        # Whether the format defines the ids as a sequence; otherwise the ids seen have to show one.
        self.defined_sequence = self.source.parser in _BINANCE_STREAMS
        self._batch: list[StandardEvent] = []
        self._failures: list[tuple[str, bytes]] = []
        self._batch_started = 0.0
        self._last_message = 0.0
        # Per symbol: event time and id of the newest event seen, and whether the ids are a sequence
        # (None: not known yet, one id seen); least recently seen first.
        self._last_seen: OrderedDict[str, tuple[datetime, Any, bool | None]] = OrderedDict()
        # Symbols whose first new event after a reconnect still has to be checked for a gap.
        self._gap_check: set[str] = set()
        self._disconnect_reason = ""
        self._last_disconnect = ""
        self._stalled = False
        self._subscribe_id = 0
        # Ids of the SUBSCRIBE requests sent and not yet answered: only a frame answering one is a reply.
        self._awaited_replies: set[int] = set()

    def subscription(self) -> list[str]:
        """The stream names the SUBSCRIBE message asks for."""
        if self.options.streams:
            return list(self.options.streams)
        if self.source.parser == "binance_kline":
            kind = f"kline_{self.options.kline_interval}"
        else:
            kind = _BINANCE_STREAMS.get(self.source.parser, ("trade", ""))[0]
        return [f"{symbol.lower()}@{kind}" for symbol in self.options.symbols]

    def subscribe_request(self) -> str | None:
        """The SUBSCRIBE message of a new connection (None without streams); its id is awaited as a reply."""
        streams = self.subscription()
        if not streams:
            return None
        self._subscribe_id += 1
        self._awaited_replies.add(self._subscribe_id)
        self._awaited_replies.discard(self._subscribe_id - _AWAITED_REPLIES)
        return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": self._subscribe_id})

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats:
        while not stop.is_set():
            try:
                await self._session(publisher, stop)
            except InvalidURI as exc:
                raise ConfigError(f"source {self.source.name}: endpoint: {exc}") from exc
            except (WebSocketException, OSError, TimeoutError, StreamStalled) as exc:
                if stop.is_set():
                    break
                if not self._stalled:
                    self._disconnect_reason = f"{type(exc).__name__}: {exc}"
                refused = exc.sent if isinstance(exc, ConnectionClosed) else None
                if refused is not None and refused.code in _REFUSED_FRAME:
                    self._fail(f"frame refused: the server sent {_REFUSED_FRAME[refused.code]} "
                               f"({refused.reason or refused.code}); the connection was reopened", b"")
                    await self.flush(publisher)
            if stop.is_set():
                break
            # Any end of the stream not asked for is counted, a normal close (1000) by the server too:
            # a server closing every connection at once would otherwise show in no metric.
            self.error("connect", "connection lost: %s", self._disconnect_reason or "server closed the stream")
            delay = self.backoff.next()
            self.note_disconnect(self._disconnect_reason or "server closed the stream")
            self.reconnected(delay, self._last_disconnect)
            if await sleep_or_stop(stop, delay):
                break
        await self.flush(publisher)
        return self.stats

    async def _session(self, publisher: Publisher, stop: asyncio.Event) -> None:
        options = self.options
        secure = self.endpoint.startswith("wss://")
        async with connect(
            self.endpoint,
            ssl=ssl_context(options) if secure else None,
            additional_headers=self.headers or None,
            open_timeout=options.open_timeout_s,
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            close_timeout=2,
            max_size=options.max_message_bytes,
            compression="deflate" if options.compression else None,
            proxy=None,
        ) as ws:
            log.info("source %s: connected to %s", self.source.name, self.source.endpoint,
                     extra=self.log_fields)
            self._disconnect_reason = ""
            self._stalled = False
            self._last_message = time.monotonic()
            if (request := self.subscribe_request()) is not None:
                await ws.send(request)
            session_over = asyncio.Event()
            watcher = asyncio.create_task(self._watch(ws, publisher, stop, session_over))
            try:
                await self._read(ws, publisher)
            finally:
                # Not cancelled: a cancelled publish would lose the batch it had taken.
                session_over.set()
                await asyncio.gather(watcher, return_exceptions=True)
                await self.flush(publisher)
            if not stop.is_set():
                # The loop ends quietly on a normal close from the server; that is still a disconnect.
                code = ws.close_code
                self._disconnect_reason = self._disconnect_reason or f"server closed the stream (code {code})"

    async def _read(self, ws: ClientConnection, publisher: Publisher) -> None:
        batch_size = self.options.batch_size
        handle = self.handle_message
        async for message in ws:
            self._last_message = time.monotonic()
            if handle(message) and len(self._batch) + len(self._failures) >= batch_size:
                await self.flush(publisher)
        if self._stalled:
            raise StreamStalled(self._disconnect_reason)

    async def _watch(
        self, ws: ClientConnection, publisher: Publisher, stop: asyncio.Event, session_over: asyncio.Event
    ) -> None:
        """Publishes partial batches on time, closes on stop, aborts a stalled stream."""
        tick = min(self.options.flush_ms / 1000, 0.25)
        while not session_over.is_set():
            if await sleep_or_stop(stop, tick):
                await ws.close()
                return
            if session_over.is_set():
                return
            now = time.monotonic()
            pending = self._batch or self._failures
            if pending and now - self._batch_started >= self.options.flush_ms / 1000:
                await self.flush(publisher)
            if now - self._last_message > self.options.idle_timeout_s:
                self._stalled = True
                self._disconnect_reason = f"stalled: no message for {self.options.idle_timeout_s}s"
                ws.transport.abort()
                return

    def handle_message(self, message: str | bytes) -> bool:
        """Parse one frame into the pending batch; False for control replies."""
        raw = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
        record, error = decode_json_record(message)
        if record is None:
            self._fail(f"frame {error}", raw)
            return True
        if self._is_reply(record):
            if record.get("error"):
                self.error("subscribe", "server replied with an error: %s", record["error"])
            return False
        try:
            event = self.to_event(record, raw)
        except Exception as exc:  # noqa: BLE001 - whatever a frame holds costs that frame only
            self._fail(parse_failure_reason(exc), raw)
            return True
        self._check_sequence(event)
        self._add(event)
        return True

    def _is_reply(self, record: Mapping[str, Any]) -> bool:
        """A reply to a SUBSCRIBE request this source sent: {"result": null, "id": 1} or {"error": {...},
        "id": 1}, nothing else in it. A record that only looks like one (an id and a result or error
        field among its fields, or an id the source never sent) is a record."""
        request_id = record.get("id")
        if (type(request_id) is not int or request_id not in self._awaited_replies
                or not ("result" in record or "error" in record) or not record.keys() <= _REPLY_KEYS):
            return False
        self._awaited_replies.discard(request_id)
        return True

    def to_event(self, record: Mapping[str, Any], raw: bytes) -> StandardEvent:
        """The event without a second validation pass, which would halve the throughput.

        What the validation would check holds by construction: frames are decoded without
        NaN/Infinity, deep nesting or lone surrogates, the parsers return aware UTC times and
        non-empty ids.
        """
        raw_sum = checksum(raw)
        parsed = self.parse_record(record, raw_sum)
        if not parsed.type or not 0 < len(parsed.event_id) <= 256:
            raise ParseError(f"event id {parsed.event_id!r} or type {parsed.type!r} is not usable")
        self.stats.last_event_time = parsed.timestamp
        # Copying a template is the cheapest public way to make a model without validation.
        return self._template.model_copy(update={
            "event_id": parsed.event_id,
            "type": parsed.type,
            "timestamp": parsed.timestamp,
            "ingest_time": datetime.now(UTC),
            "payload": parsed.payload,
            "meta": self._template.meta.model_copy(update={"raw_checksum": raw_sum}),
        })

    def note_disconnect(self, reason: str) -> None:
        """After a disconnect, the next new event of every known symbol is checked for a gap."""
        self._last_disconnect = reason
        self._gap_check = set(self._last_seen)

    def _check_sequence(self, event: StandardEvent) -> None:
        key = tracked_key(event.payload.get("s", ""))
        seq = event.payload.get(self.sequence_key, event.event_id) if self.sequence_key else event.event_id
        previous = self._last_seen.get(key)
        if previous is None:
            self._last_seen[key] = (event.timestamp, seq, True if self.defined_sequence else None)
            if len(self._last_seen) > MAX_TRACKED_KEYS:
                forgotten, _ = self._last_seen.popitem(last=False)
                self._gap_check.discard(forgotten)
            return
        self._last_seen.move_to_end(key)
        last_time, last_seq, in_sequence = previous
        integers = type(seq) is int and type(last_seq) is int
        if integers and seq <= last_seq:
            return  # a duplicate or late trade: its stable id lets the store drop or place it
        follows = integers and seq == last_seq + 1
        if key in self._gap_check:
            self._gap_check.discard(key)
            if in_sequence and integers and not follows:
                self._add(gap_event(self.source.name, key, last_time, event.timestamp, last_seq, seq,
                                    self._last_disconnect, self.reconnects))
        elif not self.defined_sequence:
            # Ids that skipped some without a reconnect (sparse, or not integers) are no sequence.
            in_sequence = follows and in_sequence is not False
        self._last_seen[key] = (event.timestamp, seq, in_sequence)

    def _add(self, event: StandardEvent) -> None:
        if not self._batch and not self._failures:
            self._batch_started = time.monotonic()
        self._batch.append(event)

    def _fail(self, reason: str, raw: bytes) -> None:
        if not self._batch and not self._failures:
            self._batch_started = time.monotonic()
        self._failures.append((reason, raw))

    async def flush(self, publisher: Publisher) -> None:
        # Swap first: the reader and the watcher may both flush, and neither may publish a batch twice.
        batch, failures = self._batch, self._failures
        self._batch, self._failures = [], []
        if batch or failures:
            await self.publish(publisher, batch, failures)
            if batch:
                self.backoff.reset()
