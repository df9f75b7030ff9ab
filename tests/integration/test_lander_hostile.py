"""The lander on real NATS and chDB: long spans, re-sent ids and hostile lines never stop it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import LanderConfig
from qraft_core.lander import Lander, LanderStats
from qraft_core.metrics import EVENTS_DEAD_LETTERED, EVENTS_LANDED
from qraft_core.store import ClickHouseStore
from tests.integration.test_lander import SETTINGS, connect

CONFIG = LanderConfig(batch_size=20_000, batch_timeout_ms=300, retry_max_s=0.2)
T0 = datetime(2014, 3, 1, tzinfo=UTC)
INGESTED = datetime(2026, 1, 5, tzinfo=UTC)


def line(event_id: str, timestamp: datetime, *, ingest: datetime = INGESTED, value: Any = 1.0,
         origin: str = "backfill") -> bytes:
    return json.dumps({
        "event_id": event_id, "source": "metrics", "type": "record",
        "timestamp": timestamp.isoformat(), "ingest_time": ingest.isoformat(),
        "payload": {"value": value}, "meta": {"parser_version": "test/1", "origin": origin},
    }).encode()


async def publish(url: str, *messages: bytes, source: str = "metrics") -> None:
    bus = await NatsBus(url, SETTINGS).connect()
    try:
        for data in messages:
            await bus.publish_raw(source, data)
    finally:
        await bus.close()


async def land(url: str, store: ClickHouseStore) -> LanderStats:
    bus = await connect(url)
    try:
        lander = Lander(bus, store, CONFIG)
        return await lander.run(asyncio.Event(), until_idle=True)
    finally:
        await bus.close()


def test_one_batch_spanning_215_days_of_2014_lands_whole(nats_server, chdb_store):
    # Five values a day for 215 days: more partitions than ClickHouse takes in one insert block.
    lines = [line(f"m{d}-{k}", T0 + timedelta(days=d, hours=k)) for d in range(215) for k in range(5)]
    asyncio.run(publish(nats_server.url, b"\n".join(lines)))
    stats = asyncio.run(land(nats_server.url, chdb_store))
    assert (stats.landed, stats.dead_lettered, stats.batches) == (1075, 0, 1)
    assert chdb_store.count("raw_events") == {"": 1075}
    with chdb_store.session():
        partitions = chdb_store._client.query(  # noqa: SLF001 - the parts the store wrote
            "SELECT uniqExact(partition) FROM system.parts WHERE table = 'raw_events' AND active").result_rows
    assert partitions == [(215,)]


def test_a_re_sent_id_keeps_one_row_the_newest_ingest_across_batches(nats_server, chdb_store):
    old = line("r-1", T0, ingest=INGESTED, value=1.0)
    asyncio.run(publish(nats_server.url, old + b"\n" + line("r-2", T0)))
    asyncio.run(land(nats_server.url, chdb_store))
    newer = line("r-1", T0 + timedelta(seconds=30), ingest=INGESTED + timedelta(hours=1), value=2.0)
    stale = line("r-2", T0 + timedelta(seconds=5), ingest=INGESTED - timedelta(hours=1), value=9.0)
    asyncio.run(publish(nats_server.url, newer + b"\n" + stale))
    stats = asyncio.run(land(nats_server.url, chdb_store))
    assert (stats.landed, stats.dead_lettered) == (1, 2)
    # Without FINAL: one row per id.
    with chdb_store.session():
        rows = chdb_store._client.query(  # noqa: SLF001 - the raw table, not the de-duplicating read
            "SELECT event_id, timestamp, payload FROM raw_events ORDER BY event_id").result_rows
        letters = chdb_store.select("dead_letters", order_by=("event_id",))
    assert [(r[0], r[1].replace(tzinfo=UTC), r[2]) for r in rows] == [
        ("r-1", T0 + timedelta(seconds=30), '{"value":2.0}'),
        ("r-2", T0, '{"value":1.0}'),
    ]
    assert letters["event_id"].to_list() == ["r-1", "r-2"]
    assert all(reason.startswith("superseded: ") for reason in letters["reason"].to_list())
    assert json.loads(letters["raw"][0])["payload"] == '{"value":1.0}'
    # Landing the same versions again changes nothing.
    asyncio.run(publish(nats_server.url, newer + b"\n" + stale + b"\n"))
    asyncio.run(land(nats_server.url, chdb_store))
    assert chdb_store.count("raw_events") == {"": 2}
    assert chdb_store.count("dead_letters") == {"": 2}


def test_hostile_lines_cost_only_themselves(nats_server, chdb_store):
    hostile = [
        b'{"event_id": "\\ud800", "source": "metrics"}',
        line("s-1", T0, value="x\udc80"),
        line("deep", T0).replace(b'{"value": 1.0}', b'{"value": ' + b"[" * 900 + b"]" * 900 + b"}"),
        b"[" * 100_000,
        b"\xff\xfe garbage",
        line("future", INGESTED + timedelta(days=400), origin="live"),
        line("y2999", datetime(2999, 1, 1, tzinfo=UTC)),
    ]
    good = [line(f"g-{i}", T0 + timedelta(minutes=i)) for i in range(3)]
    asyncio.run(publish(nats_server.url, b"\n".join([good[0], *hostile, good[1]]), good[2]))
    stats = asyncio.run(land(nats_server.url, chdb_store))
    assert (stats.landed, stats.dead_lettered) == (3, len(hostile))
    assert chdb_store.count("dead_letters") == {"": len(hostile)}
    assert sorted(chdb_store.select("raw_events", columns=("event_id",))["event_id"].to_list()) == [
        "g-0", "g-1", "g-2"]


def _counted() -> dict[tuple[str, str], float]:
    return {(sample.name, sample.labels["source"]): sample.value
            for counter in (EVENTS_LANDED, EVENTS_DEAD_LETTERED)
            for family in counter.collect() for sample in family.samples if sample.name.endswith("_total")}


def test_metrics_count_subjects_that_are_no_source_name_as_unknown(nats_server, chdb_store):
    hostile = ['x\x1b[31m', 'a"b\\c</script>', "\u202eevil\u200b"]
    asyncio.run(publish(nats_server.url, line("m-1", T0)))
    asyncio.run(publish(nats_server.url, line("s-1", T0).replace(b'"metrics"', b'"stranger"'), source="stranger"))
    for subject in hostile:
        asyncio.run(publish(nats_server.url, b'{"not": "an event"}', source=subject))
    before = _counted()
    stats = asyncio.run(land(nats_server.url, chdb_store))
    assert (stats.landed, stats.dead_lettered) == (2, 3)
    counted = {key: value - before.get(key, 0.0) for key, value in _counted().items() if value != before.get(key)}
    # Before, each subject was a series of its own, named as published.
    assert counted == {
        ("qraft_events_landed_total", "metrics"): 1.0,
        ("qraft_events_landed_total", "stranger"): 1.0,
        ("qraft_events_dead_lettered_total", "unknown"): 3.0,
    }
    # The dead letters still say which subject each came from.
    assert sorted(chdb_store.select("dead_letters", columns=("source",))["source"].to_list()) == sorted(hostile)


def test_the_same_bad_message_published_in_later_batches_is_a_dead_letter_each_time(nats_server, chdb_store):
    counted = []
    for _ in range(3):
        asyncio.run(publish(nats_server.url, b"ERROR: sensor offline"))
        counted.append(asyncio.run(land(nats_server.url, chdb_store)).dead_lettered)
    assert counted == [1, 1, 1]
    assert chdb_store.select("dead_letters", columns=["letter_id"])["letter_id"].n_unique() == 3


def test_a_redelivered_bad_message_stays_one_dead_letter(nats_server, chdb_store):
    asyncio.run(publish(nats_server.url, b"ERROR: sensor offline"))

    async def land_twice() -> None:
        bus = await connect(nats_server.url)
        try:
            messages = await bus.fetch(1, 5)
            lander = Lander(bus, chdb_store, CONFIG)
            await lander._land(lander._judge(messages), [], asyncio.Event(), 0.0)  # written, never acknowledged
            await messages[0].nak()
            await lander.run(asyncio.Event(), until_idle=True)  # the redelivery, landed again
        finally:
            await bus.close()

    asyncio.run(land_twice())
    assert chdb_store.select("dead_letters", columns=["letter_id"]).height == 1
