"""The websocket adapter against a real local server sending hostile frames: binary, not JSON,
not UTF-8, too large, cut off mid-frame, and a flood."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

BASE_MS = 1767571200000
FLOOD = 3000


def trade(trade_id: int) -> str:
    return json.dumps({"e": "trade", "E": BASE_MS + trade_id, "s": "BTCUSDT", "t": trade_id, "p": "1.0",
                       "q": "1", "T": BASE_MS + trade_id})


async def first_connection(ws: ServerConnection) -> None:
    await ws.send(trade(1))
    await ws.send(b"\x00\xff binary garbage")
    await ws.send(trade(2).encode())  # a binary frame holding JSON is read like text
    await ws.send("x" * 5000)  # over max_message_bytes: the client closes with 1009
    await ws.wait_closed()


async def second_connection(ws: ServerConnection) -> None:
    await ws.send(trade(3))
    await asyncio.sleep(0.05)
    ws.transport.write(b"\x81\x01\xff")  # a text frame that is not UTF-8: the client closes with 1007
    await ws.wait_closed()


async def third_connection(ws: ServerConnection) -> None:
    await ws.send(trade(4))
    await asyncio.sleep(0.05)
    ws.transport.write(b"\x81\x64" + b"{" * 10)  # announces 100 bytes, sends 10, and is gone
    ws.transport.abort()


async def flood(ws: ServerConnection) -> None:
    for trade_id in range(5, 5 + FLOOD):
        await ws.send(trade(trade_id))
    await ws.wait_closed()


SCRIPT = [first_connection, second_connection, third_connection, flood]


def test_hostile_frames_are_dead_letters_or_reconnects_and_every_trade_arrives_once(tmp_path: Path) -> None:
    connections: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(len(connections))
        await SCRIPT[min(len(connections) - 1, len(SCRIPT) - 1)](ws)

    async def run() -> tuple[MemoryBus, Any]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            source = SourceConfig(name="ws", type="websocket", endpoint=f"ws://127.0.0.1:{port}",
                                  parser="binance_trade",
                                  options={"max_message_bytes": 1024, "backoff_initial_s": 0.01,
                                           "backoff_max_s": 0.05, "flush_ms": 20, "batch_size": 500})
            adapter = build_adapter(source, tmp_path)
            bus = MemoryBus()
            stop = asyncio.Event()
            task = asyncio.create_task(adapter.run(bus, stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while adapter.stats.published < 4 + FLOOD and loop.time() < deadline and not task.done():
                await asyncio.sleep(0.02)
            stop.set()
            stats = await asyncio.wait_for(task, 10)
            return bus, stats

    bus, stats = asyncio.run(run())
    trades, letters = [], []
    for message in bus.queue:
        for line in message.data.split(b"\n"):
            body = json.loads(line)
            if "qraft_dead_letter" in body:
                letters.append(body["qraft_dead_letter"]["reason"])
            elif body["type"] == "trade":
                trades.append(body["payload"]["t"])
    assert sorted(trades) == list(range(1, 5 + FLOOD))
    assert letters == [
        "frame is not UTF-8: invalid start byte at byte 1",
        "frame refused: the server sent a frame larger than max_message_bytes (frame with 5000 bytes exceeds limit of 1024 bytes); "
        "the connection was reopened",
        "frame refused: the server sent a text frame that is not UTF-8 (invalid start byte at position 0); "
        "the connection was reopened",
    ]
    assert len(connections) == 4
    assert stats.extra["reconnects"] == 3


def test_a_server_that_is_not_a_websocket_server_is_retried_with_backoff(tmp_path: Path) -> None:
    answers = [b"garbage\r\n\r\n", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", b""]
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(1)
        await reader.read(1024)  # the upgrade request
        writer.write(answers[(len(served) - 1) % len(answers)])  # garbage, an HTTP error, silence
        await writer.drain()
        writer.close()

    async def run() -> Any:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        source = SourceConfig(name="ws", type="websocket", endpoint=f"ws://127.0.0.1:{port}",
                              options={"backoff_initial_s": 0.01, "backoff_max_s": 0.02})
        adapter = build_adapter(source, tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(MemoryBus(), stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(served) < 6 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not task.done()
        stop.set()
        stats = await asyncio.wait_for(task, 10)
        server.close()
        return stats

    stats = asyncio.run(run())
    assert stats.errors >= 5 and stats.extra["reconnects"] >= 5 and stats.published == 0


def test_frames_shaped_like_replies_are_records_unless_they_answer_the_subscription(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        request = json.loads(await ws.recv())
        sent.append(request)
        for frame in [{"id": 1, "ts": 1767571200, "service": "api", "error": "upstream timeout"},
                      {"result": None, "id": request["id"]},  # the reply to the SUBSCRIBE
                      {"id": 2, "ts": 1767571200, "job": "build", "result": "failed"},
                      {"id": 3, "ts": 1767571200, "service": "api", "status": "ok"}]:
            await ws.send(json.dumps(frame))
        await ws.wait_closed()

    async def run() -> tuple[MemoryBus, Any]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            source = SourceConfig(name="ws", type="websocket", endpoint=f"ws://127.0.0.1:{port}", parser="generic",
                                  options={"streams": ["events"], "id_field": "id", "time_field": "ts",
                                           "flush_ms": 20})
            adapter = build_adapter(source, tmp_path)
            bus = MemoryBus()
            stop = asyncio.Event()
            task = asyncio.create_task(adapter.run(bus, stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while adapter.stats.published < 3 and loop.time() < deadline:
                await asyncio.sleep(0.02)
            stop.set()
            return bus, await asyncio.wait_for(task, 10)

    bus, stats = asyncio.run(run())
    events, letters = bus.published()
    assert sent == [{"method": "SUBSCRIBE", "params": ["events"], "id": 1}]
    # The first frame carries the awaited id 1 but more than a reply holds: a record, as are those
    # with ids never sent.
    assert sorted(e["event_id"] for e in events) == ["ws:1", "ws:2", "ws:3"]
    assert (letters, stats.errors) == ([], 0)


def test_a_server_closing_normally_each_connection_is_counted_as_an_error(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    connections: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(1)
        await ws.close()  # 1000, normal closure: not asked for by the client

    def errors() -> float:
        return REGISTRY.get_sample_value("qraft_adapter_errors_total",
                                         {"source": "ws_closing", "kind": "connect"}) or 0.0

    async def run() -> Any:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            source = SourceConfig(name="ws_closing", type="websocket", endpoint=f"ws://127.0.0.1:{port}",
                                  options={"backoff_initial_s": 0.01, "backoff_max_s": 0.02})
            adapter = build_adapter(source, tmp_path)
            stop = asyncio.Event()
            task = asyncio.create_task(adapter.run(MemoryBus(), stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while adapter.stats.extra.get("reconnects", 0) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            stop.set()
            return await asyncio.wait_for(task, 10)

    before = errors()
    stats = asyncio.run(run())
    assert stats.extra["reconnects"] >= 3
    assert stats.errors == stats.extra["reconnects"] == errors() - before
