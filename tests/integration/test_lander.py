"""The lander between a real NATS JetStream and a real embedded ClickHouse."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from filelock import FileLock

from qraft_core.adapters.base import dead_letter_envelope
from qraft_core.bus.base import BusMessage, StreamSettings
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import LanderConfig
from qraft_core.events import EventMeta, StandardEvent
from qraft_core.lander import Lander, LanderStats
from qraft_core.store import ClickHouseStore
from qraft_core.store.base import Filter

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SETTINGS = StreamSettings(stream="LANDER_TEST")
CONFIG = LanderConfig(batch_size=250, batch_timeout_ms=200, retry_max_s=0.2)


def events(source: str, first: int, count: int) -> list[StandardEvent]:
    return [
        StandardEvent(
            event_id=f"{source}:{i}",
            source=source,
            type="trade",
            timestamp=T0 + timedelta(milliseconds=250 * i),
            ingest_time=T0 + timedelta(milliseconds=250 * i + 5),
            payload={"p": 100 + i, "q": 1},
            meta=EventMeta(parser_version="test/1"),
        )
        for i in range(first, first + count)
    ]


async def connect(url: str, durable: str = "lander", ack_wait_s: float = 5.0) -> NatsBus:
    # A short ack wait: whatever a failed batch left unacknowledged comes back within the test.
    bus = await NatsBus(url, SETTINGS).connect()
    await bus.subscribe(durable, ack_wait_s=ack_wait_s)
    return bus


async def land_all(url: str, store: ClickHouseStore, config: LanderConfig = CONFIG) -> LanderStats:
    bus = await connect(url)
    try:
        return await Lander(bus, store, config).run(asyncio.Event(), until_idle=True)
    finally:
        await bus.close()


async def publish_trades(bus: NatsBus, messages: int, per_message: int, source: str = "binance_spot") -> None:
    for m in range(messages):
        await bus.publish_events(source, events(source, m * per_message, per_message))


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


def stored_ids(store: ClickHouseStore) -> list[str]:
    return store.select("raw_events", columns=("event_id",), order_by=("event_id",))["event_id"].to_list()


def test_end_to_end_counts_reasons_and_sources(nats_server, chdb_store):
    async def scenario() -> LanderStats:
        bus = await NatsBus(nats_server.url, SETTINGS).connect()
        try:
            await publish_trades(bus, messages=12, per_message=50)
            news = [e.to_json_bytes() for e in events("news", 0, 3)]
            await bus.publish_raw("news", b"\n".join([news[0], b"{oops", news[1], b"", news[2]]))
            await bus.publish_raw(
                "news", dead_letter_envelope("record has no time field 'at'", b"{}", "news")
            )
            await bus.publish_raw("news", events("binance_spot", 0, 1)[0].to_json_bytes())
        finally:
            await bus.close()
        return await land_all(nats_server.url, chdb_store)

    stats = asyncio.run(scenario())
    assert (stats.messages, stats.landed, stats.dead_lettered) == (15, 603, 3)
    assert stats.by_source == {"binance_spot": 600, "news": 3}
    assert stats.retries == 0
    assert chdb_store.count("raw_events", group_by="source") == {"binance_spot": 600, "news": 3}
    letters = chdb_store.select("dead_letters", order_by=("reason",))
    assert letters.select("source", "reason").rows() == [
        ("news", "adapter: record has no time field 'at'"),
        ("news", "malformed JSON: Expecting property name enclosed in double quotes"),
        ("news", "source 'binance_spot' published on subject 'qraft.raw.news'"),
    ]
    assert set(letters["stage"]) == {"land"}
    first = chdb_store.select("raw_events", where=[Filter("event_id", "=", "binance_spot:7")]).row(
        0, named=True
    )
    assert first["timestamp"] == T0 + timedelta(milliseconds=1750)
    assert json.loads(first["payload"]) == {"p": 107, "q": 1}


def test_republished_events_land_once(nats_server, chdb_store):
    async def scenario() -> tuple[LanderStats, LanderStats]:
        bus = await NatsBus(nats_server.url, SETTINGS).connect()
        try:
            await publish_trades(bus, messages=4, per_message=25)
            first = await land_all(nats_server.url, chdb_store)
            # The same events again, in differently cut messages the bus cannot recognise as repeats.
            for start in range(0, 100, 40):
                batch = events("binance_spot", start, min(40, 100 - start))
                await bus.publish_raw("binance_spot", b"\n".join(e.to_json_bytes() for e in batch))
            second = await land_all(nats_server.url, chdb_store)
        finally:
            await bus.close()
        return first, second

    first, second = asyncio.run(scenario())
    # The second time every event is already stored as it is: nothing is inserted again.
    assert (first.landed, second.landed) == (100, 0)
    assert chdb_store.count("raw_events") == {"": 100}
    with chdb_store._client_in_session() as client:  # without FINAL: one row per id before any merge
        assert client.query("SELECT count() FROM raw_events").result_rows[0][0] == 100
    assert stored_ids(chdb_store) == sorted(f"binance_spot:{i}" for i in range(100))


class RelayedMessage:
    """A bus message whose acknowledgement goes through `on_ack` first."""

    def __init__(self, message: BusMessage, on_ack: Callable[[BusMessage], Awaitable[bool]]) -> None:
        self.message = message
        self.subject = message.subject
        self.data = message.data
        self.sequence = message.sequence
        self.on_ack = on_ack

    async def ack(self) -> None:
        if await self.on_ack(self.message):
            await self.message.ack()

    async def nak(self, delay_s: float = 0.0) -> None:
        await self.message.nak(delay_s)

    async def in_progress(self) -> None:
        await self.message.in_progress()


class RelayingBus:
    """The real bus, with every acknowledgement passing through `on_ack` (which may withhold it)."""

    def __init__(self, bus: NatsBus, on_ack: Callable[[BusMessage], Awaitable[bool]]) -> None:
        self.bus = bus
        self.on_ack = on_ack

    async def fetch(self, max_messages: int, timeout_s: float) -> list[BusMessage]:
        return [RelayedMessage(m, self.on_ack) for m in await self.bus.fetch(max_messages, timeout_s)]

    async def pending(self) -> int:
        return await self.bus.pending()


def test_redelivered_messages_land_once(nats_server, chdb_store):
    async def scenario() -> tuple[LanderStats, LanderStats]:
        bus = await connect(nats_server.url, ack_wait_s=2.0)
        try:
            await publish_trades(bus, messages=6, per_message=30)
            # Lands but never acknowledges: what a lander killed between insert and ack leaves behind.
            withheld: set[bytes] = set()
            crashed_stop = asyncio.Event()

            async def withhold(message: BusMessage) -> bool:
                withheld.add(message.data)
                if len(withheld) == 6:
                    crashed_stop.set()
                return False

            crashed = Lander(RelayingBus(bus, withhold), chdb_store, CONFIG)
            await asyncio.wait_for(crashed.run(crashed_stop), 60)
            # Unacknowledged, every message comes back after ack_wait.
            again = await Lander(bus, chdb_store, CONFIG).run(asyncio.Event(), until_idle=True)
            assert await bus.pending() == 0
        finally:
            await bus.close()
        return crashed.stats, again

    crashed, again = asyncio.run(scenario())
    assert crashed.landed == 180
    # Redelivered, every event is found stored as it is and not inserted again.
    assert again.landed == 0
    assert chdb_store.count("raw_events") == {"": 180}
    with chdb_store._client_in_session() as client:  # without FINAL: one row per id before any merge
        assert client.query("SELECT count() FROM raw_events").result_rows[0][0] == 180
    assert stored_ids(chdb_store) == sorted(f"binance_spot:{i}" for i in range(180))


class AckAuditor:
    """Checks, at every acknowledgement, that the message's events are already stored."""

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.acked_before_stored: list[str] = []
        self.acks = 0

    async def __call__(self, message: BusMessage) -> bool:
        ids = [json.loads(line)["event_id"] for line in message.data.split(b"\n")]
        if self.store.count("raw_events", where=[Filter("event_id", "in", ids)])[""] != len(ids):
            self.acked_before_stored.extend(ids)
        self.acks += 1
        return True


def test_a_store_held_elsewhere_is_retried_and_nothing_is_acknowledged_before_the_insert(
    nats_server, chdb_store
):
    chdb_store.lock_timeout_s = 0.1
    holder = FileLock(chdb_store.lock_path)

    async def scenario() -> tuple[LanderStats, AckAuditor]:
        bus = await connect(nats_server.url)
        auditor = AckAuditor(chdb_store)
        try:
            await publish_trades(bus, messages=8, per_message=40)
            lander = Lander(RelayingBus(bus, auditor), chdb_store, CONFIG)
            holder.acquire()
            try:
                landing = asyncio.create_task(lander.run(asyncio.Event(), until_idle=True))
                await wait_for(lambda: _at_least(lander.stats.retries, 2), "a retried store write")
                assert auditor.acks == 0
                assert lander.stats.landed == 0
                assert await bus.pending() == 8
            finally:
                holder.release()
            stats = await asyncio.wait_for(landing, 120)
            assert await bus.pending() == 0
        finally:
            await bus.close()
        return stats, auditor

    stats, auditor = asyncio.run(scenario())
    assert stats.retries >= 2
    assert (stats.messages, stats.landed) == (8, 320)
    assert auditor.acks == 8
    assert auditor.acked_before_stored == []
    assert chdb_store.count("raw_events") == {"": 320}


async def _at_least(value: int, bound: int) -> bool:
    return value >= bound


def test_a_stop_while_the_store_is_held_hands_the_batch_back(nats_server, chdb_store):
    chdb_store.lock_timeout_s = 0.1
    holder = FileLock(chdb_store.lock_path)

    async def scenario() -> tuple[LanderStats, LanderStats]:
        bus = await NatsBus(nats_server.url, SETTINGS).connect()
        try:
            await publish_trades(bus, messages=5, per_message=20)
            consumer = await connect(nats_server.url)
            stop = asyncio.Event()
            lander = Lander(consumer, chdb_store, CONFIG)
            holder.acquire()
            try:
                landing = asyncio.create_task(lander.run(stop))
                await wait_for(lambda: _at_least(lander.stats.retries, 1), "a retried store write")
                stop.set()
                stopped = await asyncio.wait_for(landing, 60)
            finally:
                holder.release()
            await consumer.close()
            # Handed back (not acknowledged): a new lander gets every message at once.
            resumed = await land_all(nats_server.url, chdb_store)
        finally:
            await bus.close()
        return stopped, resumed

    stopped, resumed = asyncio.run(scenario())
    assert (stopped.landed, stopped.messages) == (0, 0)
    assert (resumed.landed, resumed.messages) == (100, 5)
    assert chdb_store.count("raw_events") == {"": 100}


def test_a_consumer_deleted_under_a_running_lander_is_recreated_and_later_events_land_once(
    nats_server, chdb_store, caplog
):
    caplog.set_level(logging.WARNING, logger="qraft_core")

    async def scenario() -> tuple[LanderStats, float]:
        bus = await NatsBus(nats_server.url, SETTINGS).connect()
        consumer = await connect(nats_server.url)
        stop = asyncio.Event()
        lander = Lander(consumer, chdb_store, CONFIG)
        landing = asyncio.create_task(lander.run(stop))
        try:
            await publish_trades(bus, messages=4, per_message=25)
            await wait_for(lambda: _at_least(lander.stats.landed, 100), "the first events landed")
            assert await bus.delete_consumer("lander")  # what `qraft bus reset` does
            for m in range(4, 8):
                await bus.publish_events("binance_spot", events("binance_spot", m * 25, 25))
            await wait_for(lambda: _at_least(chdb_store.count("raw_events")[""], 200), "the later events landed")
            await wait_for(lambda: _equals(consumer.pending(), 0), "the re-created consumer caught up")
            ack_wait = (await bus._js.consumer_info(SETTINGS.stream, "lander")).config.ack_wait
        finally:
            stop.set()
            stats = await asyncio.wait_for(landing, 60)
            await consumer.close()
            await bus.close()
        return stats, ack_wait

    stats, ack_wait = asyncio.run(scenario())
    assert ack_wait == 5.0  # re-created with the lander's settings
    # The re-created consumer reads the stream from its first message; what is stored is not stored twice.
    assert stats.landed == 200
    with chdb_store._client_in_session() as client:  # without FINAL: one row per id before any merge
        assert client.query("SELECT count() FROM raw_events").result_rows[0][0] == 200
    assert stored_ids(chdb_store) == sorted(f"binance_spot:{i}" for i in range(200))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings if "re-created" in r.getMessage()] == [
        "consumer lander of stream LANDER_TEST was deleted; re-created it, landing from the stream's first message"
    ]
    assert not [r for r in warnings if r.exc_info or r.levelno >= logging.ERROR]


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def test_a_paused_bus_makes_the_lag_check_warn_in_one_line_and_landing_resumes(nats_server, chdb_store, caplog):
    caplog.set_level(logging.WARNING, logger="qraft_core")

    def lag_warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("lag check:")]

    async def scenario() -> LanderStats:
        consumer = await connect(nats_server.url)
        stop = asyncio.Event()
        landing = asyncio.create_task(Lander(consumer, chdb_store, CONFIG).run(stop))
        try:
            os.kill(nats_server.pid, signal.SIGSTOP)
            try:
                await wait_for(lambda: _at_least(len(lag_warnings()), 1), "the lag check's warning")
            finally:
                os.kill(nats_server.pid, signal.SIGCONT)
            bus = await NatsBus(nats_server.url, SETTINGS).connect()
            try:
                await publish_trades(bus, messages=2, per_message=25)
            finally:
                await bus.close()
            await wait_for(lambda: _at_least(chdb_store.count("raw_events")[""], 50), "events landed after the pause")
        finally:
            stop.set()
            stats = await asyncio.wait_for(landing, 60)
            await consumer.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats.landed == 50
    [warning] = lag_warnings()
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "did not answer" in warning.getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
