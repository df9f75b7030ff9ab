"""The websocket adapter against a real local server that misbehaves, landing through real NATS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl
from websockets.asyncio.server import ServerConnection, serve

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.base import StreamSettings
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import SourceConfig
from qraft_core.events import StandardEvent

BASE_MS = 1767571200000


def trade(trade_id: int, symbol: str = "BTCUSDT") -> str:
    """A recorded-format Binance trade inside a combined-stream envelope."""
    data = {"e": "trade", "E": BASE_MS + trade_id * 1000 + 5, "s": symbol, "t": trade_id,
            "p": f"{42000 + trade_id}.10", "q": "0.5", "T": BASE_MS + trade_id * 1000, "m": False, "M": True}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


# One script per connection, in order: frames to send, then how the connection ends.
SCRIPTS: list[tuple[list[str], str]] = [
    ([trade(i) for i in range(1, 6)] + ["{not json", '{"e":"trade","E":17675'], "abort"),
    ([trade(4), trade(5), trade(6), trade(8), trade(7)], "close"),
    ([trade(11), trade(12)], "stall"),
    ([trade(13), trade(14), trade(15)], "hold"),
]
EXPECTED_TRADES = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15]


class ScriptedServer:
    def __init__(self) -> None:
        self.connections = 0
        self.subscriptions: list[dict[str, Any]] = []

    async def handler(self, ws: ServerConnection) -> None:
        frames, ending = SCRIPTS[min(self.connections, len(SCRIPTS) - 1)]
        self.connections += 1
        request = json.loads(await ws.recv())
        self.subscriptions.append(request)
        await ws.send(json.dumps({"result": None, "id": request["id"]}))
        for frame in frames:
            await ws.send(frame)
        if ending == "abort":
            ws.transport.abort()
        elif ending == "close":
            await ws.close()
        else:  # "stall" keeps the connection open and silent; "hold" waits for the client to leave
            await ws.wait_closed()


def source(url: str, **options: Any) -> SourceConfig:
    return SourceConfig(
        name="binance_ws", type="websocket", endpoint=url, parser="binance_trade",
        options={"symbols": ["BTCUSDT"], "idle_timeout_s": 1.0, "backoff_initial_s": 0.05,
                 "backoff_max_s": 0.2, "flush_ms": 20, "batch_size": 3, **options},
    )


def decode(data: bytes, events: list[StandardEvent], letters: list[dict]) -> None:
    for line in data.split(b"\n"):
        body = json.loads(line)
        if "qraft_dead_letter" in body:
            letters.append(body["qraft_dead_letter"])
        else:
            events.append(StandardEvent.model_validate(body))


async def drain(
    bus: NatsBus, events: list[StandardEvent], letters: list[dict], until_trade: int | None
) -> None:
    """Read the stream back until trade `until_trade` has arrived (None: until it is empty)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        try:
            messages = await bus.fetch(100, 0.2)
        except TimeoutError:  # nats-py sometimes raises a plain TimeoutError that NatsBus.fetch lets out
            messages = []
        for message in messages:
            await message.ack()
            decode(message.data, events, letters)
        if until_trade is None and not messages:
            return
        if any(e.type == "trade" and e.payload["t"] == until_trade for e in events):
            return
    raise AssertionError(f"trade {until_trade} never arrived; got {[e.payload.get('t') for e in events]}")


def land(store: Any, events: list[StandardEvent]) -> None:
    """What the lander does: insert into raw_events, which keeps one row per event_id."""
    store.insert("raw_events", pl.DataFrame({
        "event_id": [e.event_id for e in events],
        "source": [e.source for e in events],
        "type": [e.type for e in events],
        "timestamp": [e.timestamp for e in events],
        "ingest_time": [e.ingest_time for e in events],
        "landed_at": [e.ingest_time for e in events],
        "payload": [json.dumps(e.payload) for e in events],
        "parser_version": [e.meta.parser_version for e in events],
        "raw_checksum": [e.meta.raw_checksum for e in events],
    }))


def test_adapter_survives_drops_garbage_and_stalls_and_lands_each_trade_once(
    tmp_path: Path, nats_server: Any, chdb_store: Any
) -> None:
    server = ScriptedServer()

    async def scenario() -> tuple[list[StandardEvent], list[dict], Any]:
        async with serve(server.handler, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            adapter = build_adapter(source(f"ws://127.0.0.1:{port}"), tmp_path)
            stop = asyncio.Event()
            async with NatsBus(nats_server.url, StreamSettings()) as bus:
                await bus.subscribe("ws-test")
                task = asyncio.create_task(adapter.run(bus, stop))
                events: list[StandardEvent] = []
                letters: list[dict] = []
                await drain(bus, events, letters, until_trade=15)
                stop.set()
                stats = await asyncio.wait_for(task, 30)
                await drain(bus, events, letters, until_trade=None)
                await bus._sub.unsubscribe()  # a pull subscription left open makes drain() wait 30s
        return events, letters, stats

    events, letters, stats = asyncio.run(scenario())

    # A busy machine may see the last, silent connection stall once more before the stop.
    assert server.connections >= 4
    assert server.subscriptions == [{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": n}
                                    for n in range(1, server.connections + 1)]
    trades = [e for e in events if e.type == "trade"]
    # Copies resent after the reconnect are published again with the same stable ids ...
    ids = sorted(e.payload["t"] for e in trades)
    assert [i for i in ids if i <= 12] == [1, 2, 3, 4, 4, 5, 5, 6, 7, 8, 11, 12]
    assert {i for i in ids if i > 12} == {13, 14, 15}
    assert {e.event_id for e in trades} == {f"binance_ws:BTCUSDT:{i}" for i in EXPECTED_TRADES}
    # ... so once landed, every trade exists exactly once.
    land(chdb_store, events)
    landed = chdb_store.select("raw_events", where=[], order_by=["timestamp"])
    assert landed.filter(pl.col("type") == "trade")["event_id"].to_list() == [
        f"binance_ws:BTCUSDT:{i}" for i in EXPECTED_TRADES
    ]
    gaps = [e for e in events if e.type == "source_gap"]
    assert len(gaps) == 1
    gap = gaps[0].payload
    assert (gap["key"], gap["last_id"], gap["next_id"], gap["missed_ids"]) == ("BTCUSDT", 8, 11, 2)
    assert (gap["from"], gap["to"]) == ("2026-01-05T00:00:08.000Z", "2026-01-05T00:00:11.000Z")
    assert gap["reason"].startswith("server closed the stream")
    assert sorted(letter["raw"] for letter in letters) == ['{"e":"trade","E":17675', "{not json"]
    assert all(letter["reason"].startswith("frame is not JSON") for letter in letters)
    assert stats.extra["reconnects"] == server.connections - 1
    assert stats.dead_lettered == 2


def test_pings_are_answered_and_a_server_that_stops_answering_pings_is_left(
    tmp_path: Path, caplog: Any
) -> None:
    import base64
    import hashlib
    import socket
    import threading

    from qraft_core.bus.fake import MemoryBus

    pongs: list[float] = []

    async def pinging(ws: ServerConnection) -> None:
        await ws.recv()  # the SUBSCRIBE request
        await ws.send(trade(1))
        pongs.append(await asyncio.wait_for(await ws.ping(), 5))
        await ws.wait_closed()

    # A server that completes the handshake, sends one trade and then ignores everything, pings included.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    deaf_connections: list[socket.socket] = []

    def deaf_server() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            request = conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            body = trade(len(deaf_connections) + 1).encode()
            conn.sendall(bytes([0x81, 126]) + len(body).to_bytes(2, "big") + body)
            deaf_connections.append(conn)

    threading.Thread(target=deaf_server, daemon=True).start()

    async def scenario() -> tuple[Any, Any]:
        async with serve(pinging, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            stop = asyncio.Event()
            answering = build_adapter(source(f"ws://127.0.0.1:{port}", idle_timeout_s=30), tmp_path)
            task = asyncio.create_task(answering.run(MemoryBus(), stop))
            for _ in range(250):
                if pongs:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            first = await asyncio.wait_for(task, 10)
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
        keepalive = {"idle_timeout_s": 30, "ping_interval_s": 0.1, "ping_timeout_s": 0.2}
        deaf = build_adapter(source(url, **keepalive), tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(deaf.run(MemoryBus(), stop))
        for _ in range(250):
            if len(deaf_connections) >= 2:
                break
            await asyncio.sleep(0.02)
        stop.set()
        second = await asyncio.wait_for(task, 10)
        return first, second

    try:
        answered, deaf_stats = asyncio.run(scenario())
    finally:
        listener.close()
        for conn in deaf_connections:
            conn.close()
    assert len(pongs) == 1 and answered.extra.get("reconnects", 0) == 0
    assert len(deaf_connections) >= 2 and deaf_stats.extra["reconnects"] >= 1
    assert deaf_stats.published >= 2
    assert "keepalive ping timeout" in caplog.text
