"""Landing throughput: NATS JetStream → validation → embedded ClickHouse, in events per second.

200,000 standard events, written as adapters publish them (`StandardEvent.to_json_bytes`), are
published in messages of 2,000 to an embedded nats-server, then landed by the `Lander` into chDB
(both in a temporary directory). Baseline (same run, same messages): a bare nats-py pull fetch with
acks plus one clickhouse-connect `insert_arrow` of an equivalent pre-built Arrow table, so no
parsing or validation. A second line times `land_batch` alone against a bare `json.loads` of every
line.

The machine is shared, so each is measured `REPEATS` times, the lander and its baseline
alternately (a fresh consumer and empty tables each time): values are medians, the ratio is the
median of the ratios of the pairs. Each pair, CPU seconds per 100k events and the machine's load
average (other work on the machine stretches both, the one using more CPU the more) go to stderr, as
does `land_batch`'s CPU for payloads written by another publisher (keys not sorted).
Prints JSON lines {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import nats
import polars as pl

from qraft_core.bus.base import StreamSettings
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import LanderConfig
from qraft_core.events import StandardEvent, stable_id
from qraft_core.lander import Lander, land_batch
from qraft_core.store import ClickHouseStore, open_store
from qraft_core.store.sessions import ENGINE

EVENTS = 200_000
PER_MESSAGE = 2_000
REPEATS = 3
SOURCE = "binance_spot"
SETTINGS = StreamSettings()
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def event_document(index: int) -> dict[str, object]:
    at = T0 + timedelta(milliseconds=index)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return {
        "event_id": f"{SOURCE}:BTCUSDT:{index}",
        "source": SOURCE,
        "type": "trade",
        "timestamp": stamp,
        "ingest_time": stamp,
        "payload": {
            "e": "trade",
            "s": "BTCUSDT",
            "t": index,
            "p": f"{42000 + index % 500}.50",
            "q": "0.010",
            "T": 1767571200000 + index,
            "m": index % 2 == 0,
        },
        "meta": {"parser_version": "qraft-parsers/1:binance_trade", "raw_checksum": f"{index:064x}"},
    }


def event_line(index: int) -> bytes:
    """The event as adapters publish it."""
    return StandardEvent.model_validate(event_document(index)).to_json_bytes()


def foreign_line(index: int) -> bytes:
    """The event as another publisher may write it: compact, payload keys in insertion order."""
    return json.dumps(event_document(index), separators=(",", ":")).encode()


def build_messages(line=event_line) -> list[bytes]:  # type: ignore[no-untyped-def]
    lines = [line(i) for i in range(EVENTS)]
    return [b"\n".join(lines[i : i + PER_MESSAGE]) for i in range(0, EVENTS, PER_MESSAGE)]


def equivalent_arrow(messages: list[bytes]):  # type: ignore[no-untyped-def]
    """The rows the lander would insert, built directly (untimed) for the baseline insert."""
    documents = [json.loads(line) for message in messages for line in message.split(b"\n")]
    ms = pl.Datetime("ms", "UTC")
    frame = pl.DataFrame(
        {
            "event_id": [d["event_id"] for d in documents],
            "source": [d["source"] for d in documents],
            "type": [d["type"] for d in documents],
            "timestamp": [d["timestamp"] for d in documents],
            "ingest_time": [d["ingest_time"] for d in documents],
            "landed_at": [T0] * len(documents),
            "payload": [json.dumps(d["payload"], separators=(",", ":"), sort_keys=True) for d in documents],
            "parser_version": [d["meta"]["parser_version"] for d in documents],
            "raw_checksum": [d["meta"]["raw_checksum"] for d in documents],
        }
    ).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC").cast(ms),
        pl.col("ingest_time").str.to_datetime(time_zone="UTC").cast(ms),
        pl.col("landed_at").cast(ms),
    )
    return frame.to_arrow()


async def publish(url: str, messages: list[bytes]) -> None:
    async with NatsBus(url, SETTINGS) as bus:
        for index, data in enumerate(messages):
            await bus.publish_raw(SOURCE, data, stable_id("bench", index))


async def baseline_fetch(url: str, expected: int, durable: str) -> float:
    """Seconds for a bare nats-py pull consumer to fetch and acknowledge every message."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        subscription = await js.pull_subscribe(
            SETTINGS.wildcard, durable=durable, stream=SETTINGS.stream
        )
        started = time.perf_counter()
        taken = 0
        while taken < expected:
            # 10 messages (~7 MB) per request keeps the server's buffer for this client under max_pending.
            batch = await subscription.fetch(min(10, expected - taken), timeout=5)
            for message in batch:
                await message.ack()
            taken += len(batch)
        await connection.flush()
        return time.perf_counter() - started
    finally:
        await connection.close()


def baseline_insert(store: ClickHouseStore, arrow) -> float:  # type: ignore[no-untyped-def]
    """Seconds for one insert_arrow of the pre-built rows, straight into an empty copy of
    raw_events; raw_events is emptied too, for the lander's run after it."""
    client = clickhouse_connect.get_client(dsn=store.dsn)
    try:
        client.command("CREATE TABLE IF NOT EXISTS raw_events_baseline AS raw_events")
        client.command("TRUNCATE TABLE raw_events_baseline")
        client.command("TRUNCATE TABLE raw_events")
        started = time.perf_counter()
        client.insert_arrow("raw_events_baseline", arrow)
        elapsed = time.perf_counter() - started
        landed = client.query("SELECT count() FROM raw_events_baseline").result_rows[0][0]
    finally:
        client.close()
    if landed != EVENTS:
        raise SystemExit(f"baseline inserted {landed} rows, expected {EVENTS}")
    return elapsed


async def land(url: str, store: ClickHouseStore, durable: str) -> tuple[float, float]:
    """Seconds for the Lander (default configuration) to land and acknowledge every event, and the
    CPU seconds of this process meanwhile (the lander and embedded chDB; nats-server runs apart)."""
    async with NatsBus(url, SETTINGS) as bus:
        # A short ack wait bounds the run if the server drops the lander as a slow consumer
        # (a fetch asks for up to 1,000 messages of 2,000 events, more than nats-server's 64 MB max_pending).
        await bus.subscribe(durable, ack_wait_s=10)
        lander = Lander(bus, store, LanderConfig(), subject_prefix=SETTINGS.subject_prefix)
        # The store is open before the clock starts, as the baseline's client is: the lander keeps
        # it open between batches (`store_keep_open_s`), so opening it is a cost of starting up.
        store.count("raw_events")
        stop = asyncio.Event()
        started, cpu_started = time.perf_counter(), time.process_time()
        running = asyncio.create_task(lander.run(stop))
        while lander.stats.landed + lander.stats.dead_lettered < EVENTS and not running.done():
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        stop.set()
        await running
    # A redelivered message is landed (and counted) again; raw_events is checked for exactly EVENTS rows.
    if lander.stats.landed < EVENTS or lander.stats.dead_lettered:
        raise SystemExit(f"lander stats {lander.stats}, expected {EVENTS} landed")
    return elapsed, cpu


def time_land_batch(messages: list[bytes], label: str = "land_batch") -> tuple[float, float]:
    """Seconds for land_batch on every message, and for a bare json.loads of every line."""
    subject = SETTINGS.subject(SOURCE)
    started, cpu_started = time.perf_counter(), time.process_time()
    batch = land_batch([(subject, data) for data in messages])
    validated = time.perf_counter() - started
    print(f"{label} CPU {per_100k(time.process_time() - cpu_started):.2f}s per 100k events", file=sys.stderr)
    if batch.landed != EVENTS:
        raise SystemExit(f"land_batch landed {batch.landed}, expected {EVENTS}")
    started = time.perf_counter()
    for data in messages:
        for line in data.split(b"\n"):
            json.loads(line)
    return validated, time.perf_counter() - started


def per_100k(seconds: float) -> float:
    return seconds * 100_000 / EVENTS


def report(bench: str, pairs: list[tuple[float, float]]) -> None:
    """One JSON line from (seconds, baseline seconds) pairs: median rates, median ratio of the pairs."""
    value = EVENTS / statistics.median(seconds for seconds, _ in pairs)
    baseline = EVENTS / statistics.median(baseline_seconds for _, baseline_seconds in pairs)
    ratio = statistics.median(baseline_seconds / seconds for seconds, baseline_seconds in pairs)
    print(
        json.dumps(
            {
                "bench": bench,
                "value": round(value),
                "unit": "events/s",
                "baseline": round(baseline),
                "ratio": round(ratio, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    messages = build_messages()
    arrow = equivalent_arrow(messages)
    landings = []
    with tempfile.TemporaryDirectory(prefix="qraft-bench-land-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats").start()
        try:
            store = open_store(f"chdb://{Path(tmp) / 'clickhouse'}")
            asyncio.run(publish(server.url, messages))
            for repeat in range(REPEATS):
                cpu_started = time.process_time()
                fetch_s = asyncio.run(baseline_fetch(server.url, len(messages), f"bench-baseline-{repeat}"))
                insert_s = baseline_insert(store, arrow)
                baseline_cpu_s = time.process_time() - cpu_started
                land_s, land_cpu_s = asyncio.run(land(server.url, store, f"bench-lander-{repeat}"))
                stored = store.count("raw_events")[""]
                ENGINE.close()  # the lander keeps the embedded store open between batches
                if stored != EVENTS:
                    raise SystemExit(f"raw_events holds {stored} rows, expected {EVENTS}")
                print(f"lander {land_s:.2f}s (CPU {per_100k(land_cpu_s):.2f}s per 100k events); "
                      f"baseline fetch {fetch_s:.2f}s + insert {insert_s:.2f}s "
                      f"(CPU {per_100k(baseline_cpu_s):.2f}s per 100k); ratio {(fetch_s + insert_s) / land_s:.3f}; "
                      f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
                      file=sys.stderr)
                landings.append((land_s, fetch_s + insert_s))
        finally:
            server.stop()
    report("land_nats_to_chdb", landings)
    report("land_batch_validate", [time_land_batch(messages) for _ in range(REPEATS)])
    time_land_batch(build_messages(foreign_line), "land_batch, payload keys not sorted,")


if __name__ == "__main__":
    main()
