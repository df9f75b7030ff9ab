"""Backup/restore and the cold archive on real embedded ClickHouse (chDB), the archive and a
backup through a real S3-compatible server (moto's, on a free local port), the JetStream stream
between two real nats-servers."""

import asyncio
import gzip
import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import polars as pl
import psycopg
import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.bus.base import StoredMessage, StreamSettings
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus, read_stream
from qraft_core.events import EventMeta, StandardEvent
from qraft_core.lander import land_batch
from qraft_core.lifecycle.backup import admin_client, table_digests
from qraft_core.lifecycle.compaction import compact_detector_state
from qraft_core.runtime import Runtime
from qraft_core.store import Filter

T0 = datetime(2026, 1, 5, 22, tzinfo=UTC)


def _events(n: int, offset: int = 0) -> bytes:
    """Trades every 90 s from 22:00 on Jan 5, so they span two days, each received as it happened
    (a live event far ahead of its ingest time is dead-lettered)."""
    return "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=90 * i)).isoformat(),
        "ingest_time": (T0 + timedelta(seconds=90 * i)).isoformat(),
        "payload": {"p": str(100 + i % 9), "q": "1"}, "meta": {"parser_version": "test/1"},
    }) for i in range(offset, offset + n)).encode()


def _digests(rt: Runtime) -> dict[str, list[int]]:
    with admin_client(rt.store, None) as client:
        return table_digests(client)


def _cli(*args: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def landed(config_dir) -> Runtime:
    rt = Runtime.load(config_dir)
    batch = land_batch([("qraft.raw.binance_spot", _events(200)), ("qraft.raw.binance_spot", b"{not json")])
    rt.store.insert("raw_events", batch.raw_events)
    rt.store.insert("dead_letters", batch.dead_letters)
    with sqlite3.connect(rt.data_dir / "mlflow.db") as db:
        db.execute("CREATE TABLE runs (id TEXT)")
        db.execute("INSERT INTO runs VALUES ('run-1')")
    return rt


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port, with a bucket `qraft`; one for the module (it starts slowly)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as environment:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-key",
                            "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}.items():
            environment.setenv(name, value)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
                    time.sleep(0.2)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="qraft")
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_backup_restore_round_trip_gives_identical_table_digests(landed, tmp_path):
    before = _digests(landed)
    assert before["raw_events"][0] == 200 and before["dead_letters"][0] == 1
    manifest = _cli("backup", str(tmp_path / "backup-1"))
    assert manifest["tables"] == before
    assert sorted(manifest["files"]) == ["mlflow/mlflow.db"]

    # Everything changes after the backup: more events, a table emptied, the MLflow store edited.
    landed.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _events(50, 500))]).raw_events)
    landed.store.delete("dead_letters", [Filter("letter_id", "!=", "")])
    with sqlite3.connect(landed.data_dir / "mlflow.db") as db:
        db.execute("DELETE FROM runs")
    assert _digests(landed) != before

    restored = _cli("restore", str(tmp_path / "backup-1"), "--yes")
    assert restored["verified"] is True
    assert _digests(landed) == before
    with sqlite3.connect(landed.data_dir / "mlflow.db") as db:
        assert db.execute("SELECT id FROM runs").fetchall() == [("run-1",)]


def test_restore_refuses_without_confirmation_and_names_a_missing_backup(landed, tmp_path):
    refused = CliRunner().invoke(main, ["restore", str(tmp_path / "nowhere")])
    assert refused.exit_code == 2 and "run it again with --yes" in refused.output
    missing = CliRunner().invoke(main, ["restore", str(tmp_path / "nowhere"), "--yes"])
    assert missing.exit_code == 2 and "nowhere/manifest.json: cannot be read" in missing.output


def test_archive_to_s3_removes_days_and_loads_them_back_identically(landed, s3):
    before = _digests(landed)["raw_events"]
    summary = _cli("archive", "export", "raw_events", "--start", "2026-01-05", "--end", "2026-01-07",
                   "--to", "s3://qraft/archive", "--delete")
    # 22:00–24:00 holds 80 trades at 90 s; the rest fall on Jan 6.
    assert summary["days"] == {"2026-01-05": 80, "2026-01-06": 120}
    assert landed.store.count("raw_events") == {"": 0}

    from qraft_core.lifecycle.archive import read_day
    from qraft_core.lifecycle.location import location

    day = read_day(location("s3://qraft/archive"), "raw_events", datetime(2026, 1, 6, tzinfo=UTC))
    assert day is not None and day.height == 120 and day["event_id"][0] == "e80"

    loaded = _cli("archive", "load", "raw_events", "--start", "2026-01-05", "--end", "2026-01-07",
                  "--from", "s3://qraft/archive")
    assert loaded["rows"] == 200
    assert _digests(landed)["raw_events"] == before


def test_backup_to_s3_round_trip(landed, s3):
    before = _digests(landed)
    _cli("backup", "s3://qraft/backups/b1")
    landed.store.delete("raw_events", [Filter("event_id", "!=", "")])
    assert _cli("restore", "s3://qraft/backups/b1", "--yes")["verified"] is True
    assert _digests(landed) == before


def test_compaction_keeps_every_nth_window_and_the_newest(landed):
    start = datetime(2026, 1, 5, tzinfo=UTC)
    landed.store.insert("detector_state", pl.DataFrame({
        "window_start": [start + timedelta(minutes=m) for m in range(10)],
        "detector": ["hst"] * 10, "stream": ["s"] * 10, "state": ["x"] * 10, "config_hash": ["h"] * 10,
    }))
    counts = compact_detector_state(landed.store, 4, timedelta(minutes=1), start)
    assert counts == {"kept": 4, "deleted": 6}
    kept = sorted(landed.store.count("detector_state", group_by="window_start"))
    assert kept == [f"2026-01-05 00:0{m}:00.000" for m in (0, 4, 8, 9)]
    # Compacting again changes nothing.
    assert compact_detector_state(landed.store, 4, timedelta(minutes=1), start) == {"kept": 4, "deleted": 0}


def test_dagster_on_postgres_is_dumped_and_restored(landed, tmp_path, monkeypatch):
    """The machine's PostgreSQL, a database of this test's own, pg_dump and pg_restore."""
    name = f"qraft_test_{uuid.uuid4().hex[:12]}"
    server = "postgresql://postgres@127.0.0.1:5432"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(f"{server}/{name}", autocommit=True) as db:
            db.execute("CREATE TABLE runs (run_id text)")
            db.execute("INSERT INTO runs VALUES ('r-1')")
        monkeypatch.setenv("QRAFT_DAGSTER_STORAGE", f"{server}/{name}")
        assert _cli("backup", str(tmp_path / "b"))["databases"] == ["dagster"]
        with psycopg.connect(f"{server}/{name}", autocommit=True) as db:
            db.execute("DELETE FROM runs")
            db.execute("CREATE TABLE later (x int)")
        _cli("restore", str(tmp_path / "b"), "--yes")
        with psycopg.connect(f"{server}/{name}") as db:
            assert db.execute("SELECT run_id FROM runs").fetchall() == [("r-1",)]
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the JetStream stream ------------------------------------------------------------------

BUS = StreamSettings(stream="QRAFT_RAW", subject_prefix="qraft.raw")


def _bus_event(i: int, source: str) -> StandardEvent:
    return StandardEvent(event_id=f"{source}-{i}", source=source, type="trade", timestamp=T0, ingest_time=T0,
                         payload={"p": i % 97, "pad": "x" * (i % 50)}, meta=EventMeta(parser_version="test/1"))


async def _fill(url: str) -> None:
    """3,000 events in single and batched messages over two sources, a republished batch (dropped
    by the stream) and raw messages without an id, one of them not UTF-8."""
    async with NatsBus(url, BUS) as bus:
        for i in range(0, 3000, 4):
            source = "binance_spot" if i % 8 else "news"
            if i % 12 == 0:
                await bus.publish_events(source, [_bus_event(j, source) for j in range(i, i + 4)])
            else:
                for j in range(i, i + 4):
                    await bus.publish_events(source, [_bus_event(j, source)])
        await bus.publish_events("news", [_bus_event(j, "news") for j in range(0, 4)])
        await bus.publish_raw("binance_spot", b"\xff\x00 not json")
        await bus.publish_raw("binance_spot", b"\xff\x00 not json")


def _stored(url: str) -> list[StoredMessage]:
    messages: list[StoredMessage] = []
    assert asyncio.run(read_stream(url, BUS.stream, messages.append)) is not None
    return messages


def _digest(messages: list[StoredMessage]) -> list[tuple[str, str | None, str]]:
    return [(m.subject, m.headers.get("Nats-Msg-Id"), hashlib.sha256(m.data).hexdigest()) for m in messages]


@pytest.fixture
def second_nats(tmp_path):
    server = EmbeddedNats(tmp_path / "nats-restored").start()
    yield server
    server.stop()


def test_stream_backup_restores_into_a_fresh_server_with_the_same_ids_and_data(
        landed, nats_server, second_nats, tmp_path, monkeypatch):
    asyncio.run(_fill(nats_server.url))
    original = _stored(nats_server.url)
    # 3,000 events: every third group of four is one batch message, the rest one message each.
    assert len(original) == 250 * 1 + 500 * 4 + 2 == 2252
    assert len({m.headers.get("Nats-Msg-Id") for m in original}) == 2251  # the two raw messages have none
    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    manifest = _cli("backup", str(tmp_path / "b"))
    assert manifest["stream"]["name"] == "QRAFT_RAW" and manifest["stream"]["messages"] == 2252
    with gzip.open(tmp_path / "b" / "nats" / "messages.jsonl.gz") as lines:
        assert sum(1 for _ in lines) == 2252
    config = json.loads((tmp_path / "b" / "nats" / "stream.json").read_text())
    assert config["subjects"] == ["qraft.raw.>"] and config["duplicate_window"] == 3600 * 10**9

    monkeypatch.setenv("QRAFT_NATS_URL", second_nats.url)
    restored = _cli("restore", str(tmp_path / "b"), "--yes")
    assert restored["verified"] is True
    copy = _stored(second_nats.url)
    assert _digest(copy) == _digest(original)
    assert [m.headers for m in copy] == [m.headers for m in original]

    async def reread_and_republish() -> tuple[int, list[bytes]]:
        # Read the way the lander does, from the start; a republished event stays a repeat.
        async with NatsBus(second_nats.url, BUS) as bus:
            await bus.publish_events("binance_spot", [_bus_event(5, "binance_spot")])
            await bus.subscribe("lander", ack_wait_s=30)
            fetched: list[bytes] = []
            while batch := await bus.fetch(500, 1.0):
                fetched += [m.data for m in batch]
            return await bus.stream_messages(), fetched

    count, fetched = asyncio.run(reread_and_republish())
    assert count == 2252 and fetched == [m.data for m in original]


def test_a_stream_restore_replaces_an_existing_stream_and_names_a_damaged_backup(
        landed, nats_server, second_nats, tmp_path, monkeypatch):
    async def publish(url: str, source: str, ids: range) -> None:
        async with NatsBus(url, BUS) as bus:
            for i in ids:
                await bus.publish_events(source, [_bus_event(i, source)])

    asyncio.run(publish(nats_server.url, "a", range(5)))
    asyncio.run(publish(second_nats.url, "other", range(7)))
    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    _cli("backup", str(tmp_path / "b"))
    monkeypatch.setenv("QRAFT_NATS_URL", second_nats.url)
    _cli("restore", str(tmp_path / "b"), "--yes")
    assert [m.headers["Nats-Msg-Id"] for m in _stored(second_nats.url)] == [f"a-{i}" for i in range(5)]
    # The read-back check compares contents, not only the count.
    from qraft_core.lifecycle.location import LocationError, location
    from qraft_core.lifecycle.stream_backup import restore_stream

    expected = json.loads((tmp_path / "b" / "manifest.json").read_text())["stream"]
    assert restore_stream(second_nats.url, location(str(tmp_path / "b")), expected) == expected
    with pytest.raises(LocationError, match="has the backup's 5 messages but not their contents"):
        restore_stream(second_nats.url, location(str(tmp_path / "b")), {**expected, "digest": "0" * 64})

    damaged = tmp_path / "b" / "nats" / "messages.jsonl.gz"
    lines = gzip.decompress(damaged.read_bytes()).splitlines(keepends=True)
    damaged.write_bytes(gzip.compress(b"".join([*lines[:3], b'{"subject": "qraft.raw.a"}\n', *lines[3:]])))
    failed = CliRunner().invoke(main, ["restore", str(tmp_path / "b"), "--yes"])
    assert failed.exit_code == 2, failed.output
    assert "messages.jsonl.gz: line 4 is not a stored message (KeyError" in failed.output

    # A stream of another name already takes the subjects: the server's refusal is reported.
    async def overlap() -> None:
        for settings in (StreamSettings(stream="QRAFT_RAW", subject_prefix="other"),
                         StreamSettings(stream="TAKEN", subject_prefix="qraft.raw.a")):
            await (await NatsBus(second_nats.url, settings).connect()).close()

    asyncio.run(overlap())
    refused = CliRunner().invoke(main, ["restore", str(tmp_path / "b"), "--yes"])
    assert refused.exit_code == 2, refused.output
    assert "restoring stream QRAFT_RAW at" in refused.output and "overlap" in refused.output


def test_backup_names_an_unreachable_bus_and_no_stream_leaves_it_out(landed, tmp_path, monkeypatch):
    monkeypatch.setenv("QRAFT_NATS_URL", "nats://127.0.0.1:1")
    failed = CliRunner().invoke(main, ["backup", str(tmp_path / "b")])
    assert failed.exit_code == 2 and "no NATS server answered at nats://127.0.0.1:1" in failed.output
    assert _cli("backup", str(tmp_path / "c"), "--no-stream")["stream"] is None


def _fails(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


@pytest.mark.parametrize(("manifest", "expected"), [
    ("[]", "manifest.json: expected a JSON object (got list)"),
    ('{"tables": {}}', "manifest.json: database: expected a database name (missing)"),
    ('{"database": "default", "tables": {"raw_events": 3}}', "manifest.json: tables: expected an object"),
    ("{not json", "manifest.json: not JSON"),
])
def test_restore_checks_the_manifest_before_touching_the_tables(landed, tmp_path, manifest, expected):
    _cli("backup", str(tmp_path / "b"), "--no-stream")
    (tmp_path / "b" / "manifest.json").write_text(manifest)
    before = _digests(landed)
    assert expected in _fails("restore", str(tmp_path / "b"), "--yes", "--no-stream")
    assert _digests(landed) == before


def test_a_damaged_backup_leaves_the_live_tables_as_they_were(landed, tmp_path):
    _cli("backup", str(tmp_path / "b"), "--no-stream")
    landed.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _events(50, 500))]).raw_events)
    before = _digests(landed)
    data = max((tmp_path / "b" / "clickhouse").rglob("raw_events/*/*.bin"), key=lambda f: f.stat().st_size)
    data.write_bytes(data.read_bytes()[:100])
    failed = _fails("restore", str(tmp_path / "b"), "--yes", "--no-stream")
    assert "(code " in failed and "raw_events" in failed and len(failed) < 300, failed
    assert _digests(landed) == before

    # A backup whose data differs from its manifest is refused the same way.
    _cli("backup", str(tmp_path / "c"), "--no-stream")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["tables"]["raw_events"][0] += 1
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    landed.store.delete("dead_letters", [Filter("letter_id", "!=", "")])
    before = _digests(landed)
    assert "tables differ from its manifest: raw_events" in _fails("restore", str(tmp_path / "c"), "--yes",
                                                                    "--no-stream")
    assert _digests(landed) == before


def test_a_restore_brings_back_a_table_dropped_since_the_backup(landed, tmp_path):
    before = _digests(landed)
    _cli("backup", str(tmp_path / "b"), "--no-stream")
    with admin_client(landed.store, None) as client:
        client.command("DROP TABLE dead_letters SYNC")
    assert _cli("restore", str(tmp_path / "b"), "--yes", "--no-stream")["verified"] is True
    assert _digests(landed) == before


def test_an_interrupted_backup_does_not_block_the_rerun(landed, tmp_path):
    # What an interrupted backup leaves: ClickHouse's part of it, no manifest.
    (tmp_path / "b.partial" / "clickhouse").mkdir(parents=True)
    (tmp_path / "b.partial" / "clickhouse" / ".backup").write_text("cut short")
    assert _cli("backup", str(tmp_path / "b"), "--no-stream")["tables"] == _digests(landed)
    assert not (tmp_path / "b.partial").exists() and (tmp_path / "b" / "manifest.json").exists()
    assert "b: already exists: choose a new folder" in _fails("backup", str(tmp_path / "b"), "--no-stream")
    assert _cli("restore", str(tmp_path / "b"), "--yes", "--no-stream")["verified"] is True


# -- the archive's day files ------------------------------------------------------------------

def _archive(*args: str) -> dict:  # type: ignore[type-arg]
    return _cli("archive", *args, "--start", "2026-01-05", "--end", "2026-01-07")


def _archived_ids(folder) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(pl.read_parquet(folder / "raw_events" / "*" / "*.parquet")["event_id"].to_list())


def test_exporting_an_archived_day_again_keeps_its_earlier_rows(landed, tmp_path):
    arc = str(tmp_path / "arc")
    assert _archive("export", "raw_events", "--to", arc, "--delete")["rows"] == 200
    # Late data for the archived days: a repeat of e0 and two new events, one per day.
    late = land_batch([("qraft.raw.binance_spot", _events(1, 0) + b"\n" + _events(2, 70))]).raw_events
    landed.store.insert("raw_events", late.filter(pl.col("event_id") != "e70").vstack(
        land_batch([("qraft.raw.binance_spot", _events(1, 900))]).raw_events))
    assert _archive("export", "raw_events", "--to", arc, "--delete")["days"] == {"2026-01-05": 2, "2026-01-06": 1}
    assert _archived_ids(tmp_path / "arc") == sorted([f"e{i}" for i in range(200)] + ["e900"])
    assert not list((tmp_path / "arc").rglob("*.partial"))
    assert _archive("load", "raw_events", "--from", arc)["rows"] == 201
    assert landed.store.count("raw_events") == {"": 201}


def test_archive_load_refuses_a_file_of_another_layout_before_emptying_the_day(landed, tmp_path):
    day = tmp_path / "other" / "raw_events" / "date=2026-01-05"
    day.mkdir(parents=True)
    pl.DataFrame({"event_id": ["x"], "timestamp": [T0]}).write_parquet(day / "raw_events.parquet")
    failed = _fails("archive", "load", "raw_events", "--start", "2026-01-05", "--end", "2026-01-07",
                    "--from", str(tmp_path / "other"))
    assert "rows for raw_events lack columns: source, type" in failed
    assert landed.store.count("raw_events") == {"": 200}


def test_a_damaged_archive_file_is_named_in_one_line(landed, tmp_path):
    _archive("export", "raw_events", "--to", str(tmp_path / "arc"))
    damaged = tmp_path / "arc" / "raw_events" / "date=2026-01-05" / "raw_events.parquet"
    damaged.write_bytes(damaged.read_bytes()[:500])
    for command in (["load", "raw_events", "--from"], ["export", "raw_events", "--to"]):
        failed = _fails("archive", *command, str(tmp_path / "arc"), "--start", "2026-01-05", "--end", "2026-01-07")
        assert f"{damaged}: not a readable Parquet file" in failed
    assert landed.store.count("raw_events") == {"": 200}


def test_archive_visits_only_the_days_that_hold_rows(landed, tmp_path, monkeypatch):
    from qraft_core.lifecycle import archive
    from qraft_core.store import ClickHouseStore

    selected: list[datetime] = []
    read: list[datetime] = []
    select, read_day = ClickHouseStore.select, archive.read_day
    monkeypatch.setattr(ClickHouseStore, "select", lambda self, table, **kw: selected.append(kw["start"])
                        or select(self, table, **kw))
    monkeypatch.setattr(archive, "read_day", lambda source, table, day: read.append(day)
                        or read_day(source, table, day))
    wide = ("--start", "2025-01-01", "--end", "2027-01-01")
    assert _cli("archive", "export", "raw_events", *wide, "--to", str(tmp_path / "arc"))["rows"] == 200
    assert _cli("archive", "load", "raw_events", *wide, "--from", str(tmp_path / "arc"))["rows"] == 200
    two_days = [datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)]
    assert selected == two_days and read == two_days + two_days  # export reads back what it merges with
    everything = ("--start", "1900-01-01", "--end", "2300-01-01")
    assert _cli("archive", "export", "raw_events", *everything, "--to", str(tmp_path / "arc"))["rows"] == 200
    assert "outside the years 1900-2299 the store holds" in _fails(
        "archive", "export", "raw_events", "--start", "0001-01-01", "--end", "2026-01-01", "--to", str(tmp_path))


def test_an_empty_path_is_refused_rather_than_taken_for_the_current_folder(landed, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    days = ("--start", "2026-01-05", "--end", "2026-01-07")
    for args in (["backup", "", "--no-stream"], ["restore", "", "--yes", "--no-stream"],
                 ["archive", "export", "raw_events", *days, "--to", " "],
                 ["archive", "load", "raw_events", *days, "--from", ""]):
        assert "expected a folder or s3://bucket/prefix, not an empty path" in _fails(*args)
    assert not list((tmp_path / "cwd").iterdir())
    assert landed.store.count("raw_events") == {"": 200}


def test_compact_state_takes_a_time_in_utc_with_z(landed):
    assert _cli("compact-state", "--every", "2", "--before", "2026-01-05T02:00:00Z") == {"kept": 0, "deleted": 0}
    refused = CliRunner().invoke(main, ["compact-state", "--every", "2", "--before", "yesterday"])
    assert refused.exit_code == 2 and "'yesterday' is not an ISO 8601 time" in refused.output
