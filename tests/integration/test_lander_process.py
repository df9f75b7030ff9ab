"""`qraft land` as a process: graceful stop, crash and restart, and its metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import pytest

from qraft_core.bus.embedded import EmbeddedNats, free_port
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.events import EventMeta, StandardEvent
from qraft_core.store import open_store

REPO = Path(__file__).resolve().parents[2]
QRAFT = Path(sys.executable).parent / "qraft"
STREAM, DURABLE, SOURCE = "QRAFT_RAW", "qraft-lander", "binance_spot"
T0 = datetime(2026, 1, 5, tzinfo=UTC)

pytestmark = pytest.mark.slow


def message_events(index: int, per_message: int) -> list[StandardEvent]:
    first = index * per_message
    return [
        StandardEvent(
            event_id=f"{SOURCE}:{i}",
            source=SOURCE,
            type="trade",
            timestamp=T0 + timedelta(milliseconds=10 * i),
            ingest_time=T0 + timedelta(milliseconds=10 * i + 3),
            payload={"p": 1 + i % 7, "q": 1},
            meta=EventMeta(parser_version="test/1"),
        )
        for i in range(first, first + per_message)
    ]


def event_ids(messages: range | list[int], per_message: int) -> set[str]:
    return {f"{SOURCE}:{i}" for m in messages for i in range(m * per_message, (m + 1) * per_message)}


async def _publish(url: str, messages: int, per_message: int, ack_wait_s: float) -> None:
    async with NatsBus(url) as bus:
        # The durable consumer is created here with a short ack wait, so messages a killed lander
        # held come back within seconds; the lander binds to it as it is.
        await bus.subscribe(DURABLE, ack_wait_s=ack_wait_s)
        for index in range(messages):
            await bus.publish_events(SOURCE, message_events(index, per_message))


def publish(url: str, messages: int, per_message: int, ack_wait_s: float = 2.0) -> None:
    asyncio.run(_publish(url, messages, per_message, ack_wait_s))


async def _consumer_state(url: str) -> dict[str, int]:
    connection = await nats.connect(url)
    try:
        info = await connection.jetstream().consumer_info(STREAM, DURABLE)
        return {
            "ack_floor": info.ack_floor.stream_seq,
            "ack_pending": info.num_ack_pending,
            "pending": info.num_pending,
        }
    finally:
        await connection.close()


def consumer_state(url: str) -> dict[str, int]:
    return asyncio.run(_consumer_state(url))


async def _unacknowledged(url: str, per_message: int, ack_wait_s: float) -> list[int]:
    """Indexes of the messages nobody acknowledged (taken, then handed back)."""
    async with NatsBus(url) as bus:
        await bus.subscribe(DURABLE, ack_wait_s=ack_wait_s)
        await asyncio.sleep(ack_wait_s + 0.5)  # whatever was delivered and not acked is due again
        found: list[int] = []
        while batch := await bus.fetch(1000, 1.0):
            for message in batch:
                first_id = json.loads(message.data.split(b"\n", 1)[0])["event_id"]
                found.append(int(first_id.rsplit(":", 1)[1]) // per_message)
                await message.nak()
            if len(found) > 100_000:
                break
        return sorted(set(found))


@dataclass
class LanderProcess:
    data_dir: Path
    env: dict[str, str]
    log_dir: Path

    def start(self, *args: str, name: str = "lander") -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(QRAFT), "land", *args],
            cwd=REPO,
            env=self.env,
            stdout=(self.log_dir / f"{name}.out").open("wb"),
            stderr=(self.log_dir / f"{name}.err").open("wb"),
        )

    def output(self, name: str = "lander") -> tuple[str, str]:
        return (self.log_dir / f"{name}.out").read_text(), (self.log_dir / f"{name}.err").read_text()

    def stored_ids(self) -> list[str]:
        store = open_store(f"chdb://{self.data_dir / 'clickhouse'}", lock_timeout_s=30)
        frame = store.select("raw_events", columns=("event_id",))
        return frame["event_id"].to_list()


@pytest.fixture
def lander(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[LanderProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    env.update(
        {
            "QRAFT_CONFIG_DIR": str(REPO / "config"),
            "QRAFT_DATA_DIR": str(tmp_path / "data"),
            "QRAFT_NATS_URL": nats_server.url,
            "QRAFT_LANDER_METRICS_PORT": "0",
            "QRAFT_LANDER_BATCH_SIZE": "2000",
            "QRAFT_LANDER_BATCH_TIMEOUT_MS": "200",
        }
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    yield LanderProcess(tmp_path / "data", env, logs)


def wait_until(condition, what: str, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def finish(process: subprocess.Popen[bytes], timeout_s: float = 120) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_sigterm_exits_0_with_every_acknowledged_message_stored(lander, nats_server):
    messages, per_message = 400, 50
    publish(nats_server.url, messages, per_message)
    lander.env["QRAFT_LANDER_BATCH_SIZE"] = "10"  # 10 messages per batch, so the stop comes midway
    process = lander.start("--json")
    wait_until(lambda: consumer_state(nats_server.url)["ack_floor"] >= 40, "the first batches to land")
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 0, lander.output()[1][-3000:]

    stats = json.loads(lander.output()[0])
    unacked = _unacknowledged_messages(nats_server.url, per_message)
    assert unacked, "the stop came after everything had landed"
    acked = [m for m in range(messages) if m not in set(unacked)]
    stored = lander.stored_ids()
    assert len(stored) == len(set(stored))
    assert event_ids(acked, per_message) <= set(stored)
    assert set(stored) <= event_ids(range(messages), per_message)
    assert len(stored) <= stats["landed"]
    assert stats["landed"] >= 40 * per_message


def _unacknowledged_messages(url: str, per_message: int) -> list[int]:
    return asyncio.run(_unacknowledged(url, per_message, ack_wait_s=2.0))


async def _kill_once_landing(url: str, process: subprocess.Popen[bytes], floor: int) -> list[int]:
    """SIGKILL `process` as soon as `floor` messages are acknowledged; the floors seen on the way."""
    connection = await nats.connect(url)
    seen: list[int] = []
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.append((await js.consumer_info(STREAM, DURABLE)).ack_floor.stream_seq)
            if seen[-1] >= floor:
                process.send_signal(signal.SIGKILL)
                return seen
            await asyncio.sleep(0.005)
        raise AssertionError(f"gave up waiting for {floor} acknowledged messages (saw {seen[-5:]})")
    finally:
        await connection.close()


def test_kill_9_midway_then_restart_until_idle_stores_every_event_exactly_once(lander, nats_server):
    messages, per_message = 500, 100
    publish(nats_server.url, messages, per_message)
    # The lander fetches up to batch_size messages at a time, whatever their size: 5 messages per batch.
    lander.env["QRAFT_LANDER_BATCH_SIZE"] = "5"
    first = lander.start(name="killed")
    floors = asyncio.run(_kill_once_landing(nats_server.url, first, floor=30))
    assert finish(first) == -signal.SIGKILL
    at_kill = consumer_state(nats_server.url)
    assert at_kill["ack_floor"] < messages, f"the lander finished before it was killed ({floors[-5:]})"

    second = lander.start("--until-idle", "--json", name="restarted")
    assert finish(second, timeout_s=240) == 0, lander.output("restarted")[1][-3000:]
    stats = json.loads(lander.output("restarted")[0])
    assert 0 < stats["landed"] <= messages * per_message

    stored = lander.stored_ids()
    assert len(stored) == messages * per_message
    assert set(stored) == event_ids(range(messages), per_message)
    assert consumer_state(nats_server.url) == {"ack_floor": messages, "ack_pending": 0, "pending": 0}


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""


def test_metrics_endpoint_counts_landed_events(lander, nats_server):
    publish(nats_server.url, 10, 25)
    port = free_port()
    process = lander.start("--metrics-port", str(port))
    try:
        landed = f'qraft_events_landed_total{{source="{SOURCE}"}} 250.0'
        wait_until(lambda: landed in scrape(port), "the landed events in /metrics")
        text = scrape(port)
        assert "# TYPE qraft_events_landed_total counter" in text
        assert "qraft_land_batch_seconds_count" in text
    finally:
        process.send_signal(signal.SIGTERM)
        assert finish(process) == 0
    stdout, _ = lander.output()
    assert stdout.startswith("landed 250 events, dead-lettered 0 in ")
