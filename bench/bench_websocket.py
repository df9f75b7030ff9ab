"""Websocket adapter throughput: parse + publish rate against a local server.

A separate process serves pre-framed Binance trade messages as fast as the
socket takes them, so the client side measures only receiving and parsing.
Baseline (same run): a bare `websockets` receive loop that only counts frames.
Prints JSON lines {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import multiprocessing
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from websockets.asyncio.client import connect

from qraft_core.adapters.registry import build_adapter
from qraft_core.config import SourceConfig
from qraft_core.events import StandardEvent

MESSAGES = 200_000
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def trade_frame(index: int) -> bytes:
    body = json.dumps({
        "e": "trade", "E": 1767571200000 + index, "s": "BTCUSDT", "t": index + 1,
        "p": f"{42000 + index % 500}.50", "q": "0.010", "T": 1767571200000 + index, "m": index % 2 == 0,
        "M": True,
    }, separators=(",", ":")).encode()
    length = len(body)
    header = bytes([0x81, length]) if length < 126 else bytes([0x81, 126]) + struct.pack("!H", length)
    return header + body


def serve(listener: socket.socket, count: int) -> None:
    """Accept connections forever; each one gets the handshake then `count` frames."""
    payload = b"".join(trade_frame(i) for i in range(count))
    while True:
        conn, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID.encode()).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            conn.sendall(payload)
            conn.recv(1024)  # hold the connection until the client leaves
        except OSError:
            pass
        conn.close()


class CountingPublisher:
    def __init__(self, target: int, done: asyncio.Event) -> None:
        self.events = 0
        self.target = target
        self.done = done

    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        self.events += len(events)
        if self.events >= self.target:
            self.done.set()

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        raise AssertionError(f"unexpected dead letter: {data[:200]!r}")


async def raw_loop(url: str, count: int) -> float:
    started = time.perf_counter()
    received = 0
    async with connect(url, compression=None, max_size=None) as ws:
        async for _message in ws:
            received += 1
            if received == count:
                break
    return count / (time.perf_counter() - started)


async def adapter_loop(url: str, count: int, state_dir: Path) -> float:
    source = SourceConfig(name="bench", type="websocket", endpoint=url, parser="binance_trade",
                          options={"batch_size": 2000})
    adapter = build_adapter(source, state_dir)
    stop = asyncio.Event()
    publisher = CountingPublisher(count, stop)
    started = time.perf_counter()
    await adapter.run(publisher, stop)
    assert publisher.events == count, publisher.events
    return count / (time.perf_counter() - started)


def main() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
    server = multiprocessing.get_context("fork").Process(target=serve, args=(listener, MESSAGES), daemon=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = max(asyncio.run(raw_loop(url, MESSAGES)) for _ in range(2))
            value = max(asyncio.run(adapter_loop(url, MESSAGES, Path(tmp))) for _ in range(2))
    finally:
        server.terminate()
    print(json.dumps({"bench": "websocket_adapter_parse_publish", "value": round(value), "unit": "msg/s",
                      "baseline": round(baseline), "ratio": round(value / baseline, 3)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
