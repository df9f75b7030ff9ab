"""A 3-node JetStream cluster, an R3 stream, its leader and the lander killed mid-run.

Guarantees: publishes ride through a leader election (retries with the same message
ids: each batch is stored in the stream exactly once); a restarted node and a killed
lander lose nothing and store no id twice; the R3 stream is never downgraded by a
client asking for 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from qraft_core.bus.nats_bus import NatsBus
from qraft_core.events import EventMeta, StandardEvent
from qraft_core.runtime import Runtime
from tests.chaos.cluster import NatsCluster
from tests.chaos.conftest import wait_for

T0 = datetime(2026, 1, 5, tzinfo=UTC)
BATCH = 500


def events(start: int, count: int) -> list[StandardEvent]:
    return [
        # Ingested as they happen: a live source's events lie within seconds of their ingest time.
        StandardEvent(event_id=f"c-{i}", source="chaos", type="tick", timestamp=T0 + timedelta(milliseconds=50 * i),
                      ingest_time=T0 + timedelta(milliseconds=50 * i), payload={"i": i},
                      meta=EventMeta(parser_version="chaos/1"))
        for i in range(start, start + count)
    ]


def start_lander(config_dir) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    log = open(Path(config_dir) / "lander.log", "ab")  # noqa: SIM115 - owned by the child; read on failure
    return subprocess.Popen(
        [sys.executable, "-m", "qraft_cli", "--config-dir", str(config_dir), "land", "--metrics-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def lander_log(config_dir) -> str:  # type: ignore[no-untyped-def]
    path = Path(config_dir) / "lander.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def cluster(tmp_path):
    nodes = NatsCluster(tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    yield nodes.start()
    nodes.stop()


async def produce(rt: Runtime, cluster: NatsCluster, total: int, kills: dict[int, str], lander: list) -> dict:
    """Publish `total` events in batches; at the seeded batch numbers, kill what `kills` names."""
    bus = await NatsBus(cluster.urls, rt.stream_settings).connect(wait_s=60)
    seen: dict = {"killed_leader": None}
    try:
        assert (await bus.stream_config()).num_replicas == 3
        for batch, start in enumerate(range(0, total, BATCH)):
            action = kills.get(batch)
            if action == "leader":
                info = await bus._js.stream_info(rt.config.nats.stream)
                seen["killed_leader"] = info.cluster.leader
                cluster.kill(info.cluster.leader)
            elif action == "restart-node":
                cluster.start_node(seen["killed_leader"])
            elif action == "lander":
                os.kill(lander[0].pid, signal.SIGKILL)
                lander[0].wait()
                lander[0] = start_lander(rt.config_path)
            await bus.publish_events("chaos", events(start, min(BATCH, total - start)))
        await asyncio.sleep(0)
        seen["stream_messages"] = await bus.stream_messages()
    finally:
        await bus.close()
    return seen


async def lag(rt: Runtime, cluster: NatsCluster) -> int | None:
    """The lander's lag; None until the (restarted) lander has created its consumer, and while
    the cluster is still electing leaders after a restart (its API requests time out meanwhile)."""
    async with NatsBus(cluster.urls, rt.stream_settings) as bus:
        try:
            return await bus.consumer_pending(rt.config.lander.durable_name)
        except (NotFoundError, NatsTimeoutError):
            return None


async def replicas_after_asking_for_one(rt: Runtime, cluster: NatsCluster) -> int:
    async with NatsBus(cluster.urls, replace(rt.stream_settings, replicas=1)) as bus:
        return int((await bus.stream_config()).num_replicas)


def test_killing_the_stream_leader_and_the_lander_loses_and_doubles_nothing(
    cluster, config_dir, monkeypatch, chaos_events, chaos_rng
):
    monkeypatch.setenv("QRAFT_NATS_URL", ",".join(cluster.urls))
    monkeypatch.setenv("QRAFT_LANDER_BATCH_TIMEOUT_MS", "100")
    rt = Runtime.load(config_dir)
    batches = -(-chaos_events // BATCH)
    leader_at = chaos_rng.randrange(2, batches // 3)
    kills = {leader_at: "leader", leader_at + chaos_rng.randrange(2, batches // 3): "restart-node",
             chaos_rng.randrange(batches // 3, batches - 1): "lander"}
    lander = [start_lander(config_dir)]
    try:
        seen = asyncio.run(produce(rt, cluster, chaos_events, kills, lander))
        assert seen["stream_messages"] == batches  # each batch stored once, retries included
        assert wait_for(lambda: asyncio.run(lag(rt, cluster)) == 0, timeout_s=300, every_s=1.0), (
            kills, lander_log(config_dir))
    finally:
        lander[0].send_signal(signal.SIGTERM)
        lander[0].wait(timeout=60)
    assert asyncio.run(replicas_after_asking_for_one(rt, cluster)) == 3
    with rt.store._client_in_session() as client:
        rows, distinct = client.query("SELECT count(), uniqExact(event_id) FROM raw_events").result_rows[0]
    # Nothing lost, no id twice, counted without FINAL (see test_embedded_faults).
    assert (rows, distinct, rt.store.count("raw_events")[""]) == (chaos_events,) * 3, (kills, lander_log(config_dir))
