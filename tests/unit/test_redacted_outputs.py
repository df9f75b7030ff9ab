"""Operator outputs that name the bus never show its credentials."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from qraft_cli.operations import bus_status


class _Bus:
    servers = ["nats://ops:s3cr3tpw@nats-a:4222", "nats://nats-b:4222"]
    clustered = True
    message_limit = 1000

    async def stream_config(self) -> Any:
        return SimpleNamespace(name="QRAFT_RAW", num_replicas=3, max_age=60, max_bytes=-1, max_msg_size=1024)

    async def consumer_pending(self, durable: str) -> int:
        return 0

    async def stream_messages(self) -> int:
        return 7

    async def close(self) -> None:
        return None


def test_bus_status_masks_the_password_of_each_seed() -> None:
    async def connect_bus(start: bool) -> _Bus:
        return _Bus()

    rt = SimpleNamespace(connect_bus=connect_bus, config=SimpleNamespace(lander=SimpleNamespace(durable_name="lander")))
    status = asyncio.run(bus_status(rt))  # type: ignore[arg-type]
    assert status["servers"] == ["nats://ops:***@nats-a:4222", "nats://nats-b:4222"]
