"""The embedded nats-server and NatsBus: publish, de-duplicate, fetch, acknowledge, redeliver."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from qraft_core.bus.base import StreamSettings, batch_message_id, encode_events
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.events import EventMeta, StandardEvent

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def event(i: int, source: str = "s") -> StandardEvent:
    return StandardEvent(
        event_id=f"{source}-{i}",
        source=source,
        type="t",
        timestamp=T0,
        ingest_time=T0,
        payload={"i": i},
        meta=EventMeta(parser_version="v1"),
    )


def test_the_server_is_found_by_directory_and_stopped(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        state = json.loads(server.state_file.read_text())
        assert state == {"pid": server.pid, "port": server.port}
        found = EmbeddedNats.running(tmp_path / "nats")
        assert found is not None and (found.port, found.pid) == (server.port, server.pid)
        assert EmbeddedNats.ensure(tmp_path / "nats").port == server.port
    finally:
        server.stop()
    assert not server.state_file.exists()
    assert EmbeddedNats.running(tmp_path / "nats") is None


def test_a_stale_state_file_is_not_taken_for_a_running_server(tmp_path):
    directory = tmp_path / "nats"
    directory.mkdir()
    (directory / "server.json").write_text(json.dumps({"pid": 2**22 + 7, "port": 1}))
    assert EmbeddedNats.running(directory) is None
    (directory / "server.json").write_text("{not json")
    assert EmbeddedNats.running(directory) is None


def test_batch_message_ids_are_the_event_id_or_a_digest():
    assert batch_message_id([event(1)]) == "s-1"
    assert batch_message_id([event(1), event(2)]) == batch_message_id([event(1), event(2)])
    assert batch_message_id([event(1), event(2)]) != batch_message_id([event(2), event(1)])
    assert encode_events([event(1), event(2)]).count(b"\n") == 1


async def _round_trip(url: str) -> None:
    settings = StreamSettings(stream="ROUND_TRIP", subject_prefix="rt")
    async with NatsBus(url, settings) as bus:
        await bus.subscribe("reader", ack_wait_s=30)
        await bus.publish_events("s", [event(1), event(2)])
        await bus.publish_events("s", [event(1), event(2)])  # a republished batch: dropped by the bus
        await bus.publish_events("news", [event(1, "news")])
        await bus.publish_raw("s", b"raw bytes")  # no id: never de-duplicated
        await bus.publish_raw("s", b"raw bytes")
        await bus.publish_events("s", [])
        assert await bus.stream_messages() == 4
        assert await bus.pending() == 4

        first = await bus.fetch(10, 2.0)
        assert [(m.subject, m.data) for m in first] == [
            ("rt.s", encode_events([event(1), event(2)])),
            ("rt.news", event(1, "news").to_json_bytes()),
            ("rt.s", b"raw bytes"),
            ("rt.s", b"raw bytes"),
        ]
        # Delivered but not acknowledged still counts as pending.
        assert await bus.pending() == 4
        await first[0].ack()
        await first[1].in_progress()
        await first[1].ack()
        await first[2].ack()
        await first[3].nak()
        redelivered = await bus.fetch(10, 2.0)
        assert [m.data for m in redelivered] == [b"raw bytes"]
        await redelivered[0].ack()
        await asyncio.sleep(0.1)  # acks are fire-and-forget
        assert await bus.pending() == 0
    async with NatsBus(url, settings) as bus:
        await bus.subscribe("reader", ack_wait_s=30)
        assert await bus.fetch(10, 0.2) == []


def test_publish_deduplicate_fetch_ack_and_redeliver(nats_server):
    asyncio.run(_round_trip(nats_server.url))


async def _resume(url: str) -> list[bytes]:
    settings = StreamSettings(stream="RESUME", subject_prefix="rs")
    async with NatsBus(url, settings) as bus:
        await bus.subscribe("durable", ack_wait_s=30)
        for i in range(3):
            await bus.publish_events("s", [event(i)])
        taken = await bus.fetch(1, 2.0)
        await taken[0].ack()
    # A new connection with the same durable name continues after the acknowledged message.
    async with NatsBus(url, settings) as bus:
        await bus.subscribe("durable", ack_wait_s=30)
        await bus.ensure_stream()  # idempotent on an existing stream
        rest = await bus.fetch(10, 2.0)
        for message in rest:
            await message.ack()
        return [m.data for m in rest]


def test_a_durable_consumer_resumes_after_reconnecting(nats_server):
    assert asyncio.run(_resume(nats_server.url)) == [event(1).to_json_bytes(), event(2).to_json_bytes()]


class _LateProbeSubscription:
    """A pull subscription whose no-wait probe was answered after the deadline (seen under load):
    nats-py then raises a plain TimeoutError itself, not its own TimeoutError subclass."""

    async def fetch(self, batch: int, timeout: float) -> list:
        raise TimeoutError


def test_a_fetch_that_times_out_inside_nats_py_returns_nothing():
    bus = NatsBus("nats://127.0.0.1:1")
    bus._sub = _LateProbeSubscription()
    assert asyncio.run(bus.fetch(10, 0.2)) == []
