"""The embedded nats-server and NatsBus: publish, de-duplicate, fetch, acknowledge, redeliver."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from qraft_core.bus.base import (
    BusError,
    BusUnavailable,
    StreamSettings,
    batch_message_id,
    encode_events,
)
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus, read_stream, write_stream
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


# -- message sizes, connecting, stream settings, one server per directory --------------------

def sized_event(i: int, payload_bytes: int) -> StandardEvent:
    return event(i).model_copy(update={"payload": {"i": i, "pad": "x" * payload_bytes}})


async def _drain(bus: NatsBus) -> list[bytes]:
    messages = []
    while batch := await bus.fetch(100, 1.0):
        for message in batch:
            await message.ack()
        messages += [m.data for m in batch]
    return messages


async def _publish_past_one_mib(url: str) -> tuple[int, list[bytes], int]:
    settings = StreamSettings(stream="SIZES", subject_prefix="sz")
    async with NatsBus(url, settings) as bus:
        await bus.subscribe("reader")
        events = [sized_event(i, 1200) for i in range(3000)]  # 3.7 MB in one call
        await bus.publish_events("s", events)
        await bus.publish_events("s", [sized_event(9999, 2 * 1024 * 1024)])  # larger than any message
        return bus.message_limit, await _drain(bus), await bus.stream_messages()


def test_batches_larger_than_the_servers_max_payload_are_split_and_an_oversized_event_is_dead_lettered(tmp_path):
    # A server with nats-server's own 1 MiB default, as an external server would have.
    server = EmbeddedNats(tmp_path / "nats", max_payload=1024 * 1024).start()
    try:
        limit, messages, stored = asyncio.run(_publish_past_one_mib(server.url))
    finally:
        server.stop()
    assert limit == 1024 * 1024 - 1024
    assert all(len(m) <= limit for m in messages)
    lines = [line for m in messages[:-1] for line in m.split(b"\n")]
    assert [json.loads(line)["event_id"] for line in lines] == [f"s-{i}" for i in range(3000)]
    assert stored == len(messages) == 6  # 3000 events of ~1.3 KB in 5 parts, then the dead letter
    dead = json.loads(messages[-1])["qraft_dead_letter"]
    assert dead["reason"].startswith("event 's-9999' is 2097") and dead["reason"].endswith(f"at most {limit}")
    assert dead["source"] == "s"


async def _negotiated(url: str) -> tuple[int, int]:
    async with NatsBus(url, StreamSettings(stream="DEFAULTS", subject_prefix="df")) as bus:
        return int(bus._nc.max_payload), (await bus.stream_config()).max_msg_size


def test_the_embedded_server_is_started_with_the_streams_message_size(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        assert asyncio.run(_negotiated(server.url)) == (8 * 1024 * 1024, 8 * 1024 * 1024)
    finally:
        server.stop()


async def _stream_settings(url: str) -> tuple[list, list]:
    import dataclasses

    settings = StreamSettings(stream="LIMITS", subject_prefix="lm", max_age_s=3600, max_bytes=10**9)
    async with NatsBus(url, settings) as bus:
        created = await bus.stream_config()
        # An operator adds a limit of their own; Qraft's next connect keeps it.
        await bus._js.update_stream(dataclasses.replace(created, max_msgs=12345))
    async with NatsBus(url, StreamSettings(stream="LIMITS", subject_prefix="lm")) as bus:
        kept = await bus.stream_config()
    return ([created.num_replicas, created.max_age, created.max_bytes],
            [kept.num_replicas, kept.max_age, kept.max_bytes, kept.max_msgs])


def test_stream_limits_are_set_and_settings_qraft_does_not_own_are_kept(nats_server):
    created, kept = asyncio.run(_stream_settings(nats_server.url))
    assert created == [1, 3600.0, 10**9]
    assert kept == [1, 3600.0, 10**9, 12345]


async def _connect_until_stopped(url: str) -> str:
    from qraft_core.bus.base import BusStopped, BusUnavailable

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    try:
        await NatsBus(url).connect(stop)
    except BusStopped as exc:
        stopped = str(exc)
    try:
        await NatsBus(url).connect(wait_s=0.3)
    except BusUnavailable as exc:
        return f"{stopped} | {exc}"
    return stopped


def test_connecting_to_an_unreachable_server_can_be_stopped_or_bounded():
    from qraft_core.bus.embedded import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    assert asyncio.run(_connect_until_stopped(f"{url}, {url}")) == (
        f"stopped while connecting to NATS at {url},{url} | no NATS server answered at {url},{url} within 0.3s"
    )


def test_one_directory_has_one_server_and_a_dead_one_is_revived_on_its_port(tmp_path):
    import os
    import signal

    import pytest

    from qraft_core.bus.embedded import EmbeddedNatsError, process_alive

    first = EmbeddedNats(tmp_path / "nats").start()
    try:
        with pytest.raises(EmbeddedNatsError, match=f"pid {first.pid} already serves"):
            EmbeddedNats(tmp_path / "nats").start()
        assert EmbeddedNats.ensure(tmp_path / "nats").pid == first.pid
        assert first.revive() is False
        old_pid, port = first.pid, first.port
        os.kill(old_pid, signal.SIGKILL)
        first.process.wait()
        assert first.revive() is True
        assert (first.port, process_alive(first.pid), first.pid != old_pid) == (port, True, True)
        asyncio.run(_round_trip(first.url))  # the stream survived on disk; the server works
    finally:
        first.stop()


# -- commands: stopped while connecting, no orphan server, consumer reset ----------------------

def _qraft(config_dir, *args: str, env: dict | None = None):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "qraft_cli", "--config-dir", str(config_dir), *args],
                            env={**os.environ, "QRAFT_LANDER_METRICS_PORT": "0", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_land_against_an_unreachable_server_stops_on_sigterm(config_dir):
    import signal
    import time

    from qraft_core.bus.embedded import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    process = _qraft(config_dir, "land", env={"QRAFT_NATS_URL": url})
    deadline = time.monotonic() + 60
    output = b""
    while b"retrying" not in output and time.monotonic() < deadline:  # it is waiting for the server
        output += process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    output += process.communicate(timeout=30)[0]
    assert process.returncode == 2, output
    assert f"error: stopped while connecting to NATS at {url}".encode() in output
    assert b"Traceback" not in output


def test_land_stops_the_embedded_server_it_started(config_dir, tmp_path):
    from qraft_core.bus.embedded import process_alive

    process = _qraft(config_dir, "land", "--until-idle", "--json")
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output
    log = (tmp_path / "data" / "nats" / "nats-server.log").read_text()
    pid = int(log[1:log.index("]")])  # nats-server starts every log line with "[pid]"
    assert not process_alive(pid)
    assert not (tmp_path / "data" / "nats" / "server.json").exists()


def test_bus_reset_makes_the_next_lander_land_the_stream_again(config_dir, nats_server, monkeypatch, tmp_path):
    from qraft_cli.land import run_lander
    from qraft_cli.operations import reset_consumer
    from qraft_core.runtime import Runtime

    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    monkeypatch.setenv("QRAFT_LANDER_BATCH_TIMEOUT_MS", "100")

    async def publish() -> None:
        async with NatsBus(nats_server.url) as bus:
            await bus.publish_events("s", [event(i) for i in range(5)])

    asyncio.run(publish())
    landed = []
    for data_dir in ["first", "fresh", "fresh after reset"]:
        monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / data_dir))
        rt = Runtime.load(config_dir)
        if data_dir == "fresh after reset":
            assert asyncio.run(reset_consumer(rt)) is True
        landed.append(asyncio.run(run_lander(rt, until_idle=True)).landed)
    # A fresh store behind a consumer that had read everything: nothing, until the reset.
    assert landed == [5, 0, 5]
    from qraft_cli.operations import bus_status

    status = asyncio.run(bus_status(rt))
    assert {k: status[k] for k in ("stream", "replicas", "clustered", "messages", "consumer_lag", "max_msg_bytes")} == {
        "stream": "QRAFT_RAW", "replicas": 1, "clustered": False, "messages": 1, "consumer_lag": 0,
        "max_msg_bytes": 8 * 1024 * 1024,  # the embedded server's max_payload, matching nats.max_msg_bytes
    }


def test_nats_url_takes_a_list_or_a_comma_separated_string_of_seed_urls():
    from qraft_core.bus.nats_bus import seed_urls
    from qraft_core.config import QraftConfig

    listed = QraftConfig.model_validate({"nats": {"url": ["nats://a:4222", "nats://b:4222"]}})
    assert listed.nats.url == "nats://a:4222,nats://b:4222"
    assert seed_urls(listed.nats.url) == seed_urls("nats://a:4222, nats://b:4222") == ["nats://a:4222", "nats://b:4222"]
    assert NatsBus(listed.nats.url).servers == ["nats://a:4222", "nats://b:4222"]


async def _snapshot_calls(url: str) -> tuple[dict | None, list[bytes], str, str]:
    settings = StreamSettings(stream="SNAPSHOT_TEST", subject_prefix="snap")
    async with NatsBus(url, settings) as bus:
        await bus.publish_raw("s", b"one")
        await bus.publish_raw("s", b"two")
    read: list[bytes] = []
    config = await read_stream(url, settings.stream, lambda m: read.append(m.data))
    missing = await read_stream(url, "NO_SUCH_STREAM", lambda m: read.append(m.data))
    try:
        await read_stream("nats://127.0.0.1:1", settings.stream, lambda m: None)
    except BusUnavailable as exc:
        unreachable = str(exc)
    try:  # subjects another stream holds: the server refuses the stream
        await write_stream(url, {"name": "OVERLAPPING", "subjects": ["snap.s"]}, [])
    except BusError as exc:
        refused = str(exc)
    assert missing is None
    return config, read, unreachable, refused


def test_stream_snapshots_read_and_restore_on_a_connection_of_their_own(nats_server):
    config, read, unreachable, refused = asyncio.run(_snapshot_calls(nats_server.url))
    assert config is not None and config["name"] == "SNAPSHOT_TEST" and config["subjects"] == ["snap.>"]
    assert read == [b"one", b"two"]
    assert unreachable.startswith("no NATS server answered at nats://127.0.0.1:1: ")
    assert refused.startswith(f"restoring stream OVERLAPPING at {nats_server.url} failed: ")
    assert "overlap" in refused
