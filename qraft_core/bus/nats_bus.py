"""NATS JetStream: the real bus. The only module family that imports nats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import NotFoundError

from qraft_core.bus.base import StreamSettings, batch_message_id, encode_events
from qraft_core.events import StandardEvent


class NatsMessage:
    __slots__ = ("_msg", "data", "subject")

    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self.subject: str = msg.subject
        self.data: bytes = msg.data

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float = 0.0) -> None:
        await self._msg.nak(delay=delay_s or None)

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class NatsBus:
    """Publisher and durable pull consumer on one JetStream stream."""

    def __init__(self, url: str, settings: StreamSettings | None = None) -> None:
        self.url = url
        self.settings = settings or StreamSettings()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    async def connect(self) -> NatsBus:
        self._nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5
        )
        self._js = self._nc.jetstream()
        await self.ensure_stream()
        return self

    async def close(self) -> None:
        if self._nc is not None:
            # Flush what was published and acknowledged; a drain can stall on a pull subscription.
            await self._nc.flush(timeout=10)
            await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> NatsBus:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self.settings.stream,
            subjects=[self.settings.wildcard],
            storage=api.StorageType.FILE,
            duplicate_window=float(self.settings.duplicate_window_s),
            max_msg_size=self.settings.max_msg_bytes,
        )
        try:
            await self._js.stream_info(self.settings.stream)
            await self._js.update_stream(config)
        except NotFoundError:
            await self._js.add_stream(config)

    # -- publishing -----------------------------------------------------
    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        if events:
            await self.publish_raw(source, encode_events(events), batch_message_id(events))

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": message_id} if message_id else None
        await self._js.publish(self.settings.subject(source), data, headers=headers, timeout=10)

    # -- consuming ------------------------------------------------------
    async def subscribe(self, durable: str, ack_wait_s: float = 60.0) -> None:
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_ack_pending=100_000,
            max_deliver=-1,
        )
        self._sub = await self._js.pull_subscribe(
            self.settings.wildcard, durable=durable, stream=self.settings.stream, config=config
        )

    async def fetch(self, max_messages: int, timeout_s: float) -> list[NatsMessage]:
        try:
            msgs = await self._sub.fetch(max_messages, timeout=timeout_s)
        except (NatsTimeout, TimeoutError):  # nats-py raises either, depending on where it waited
            return []
        return [NatsMessage(m) for m in msgs]

    async def pending(self) -> int:
        info = await self._sub.consumer_info()
        return int(info.num_pending + info.num_ack_pending)

    async def consumer_pending(self, durable: str) -> int:
        """Messages the named durable consumer has not yet acknowledged (its lag)."""
        info = await self._js.consumer_info(self.settings.stream, durable)
        return int(info.num_pending + info.num_ack_pending)

    async def stream_messages(self) -> int:
        info = await self._js.stream_info(self.settings.stream)
        return int(info.state.messages)
