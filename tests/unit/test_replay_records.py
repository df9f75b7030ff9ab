"""Replay records: a damaged one on disk is skipped (moved aside, one warning), never blocking replays;
a failed replay records why in one line, and an error while summarizing never leaves it "running"."""

import json
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from qraft_cli.replay import replay_text
from qraft_core.bootstrap import bootstrap
from qraft_core.replays import RUN_FAILURES, ReplayConflict, ReplayRegistry
from qraft_core.services.fake_runner import FakePipelineRunner
from qraft_core.services.ports import WindowRuns
from qraft_core.services.replay import ReplayRequest
from qraft_core.store.base import StoreError
from qraft_core.store.fake import MemoryStore
from qraft_core.tracking import Tracker

T0 = datetime(2026, 1, 5, tzinfo=UTC)
GOOD = {"id": "r-good", "start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T01:00:00.000Z",
        "sources": ["binance_spot"], "status": "succeeded", "pid": 0, "started_at": "2026-01-05T02:00:00.000Z",
        "finished_at": "2026-01-05T02:01:00.000Z", "summary": {"events": 3}}


@pytest.mark.parametrize(("text", "reason"), [
    ("", "Expecting value: line 1 column 1 (char 0)"),
    ('{"id": "r-bad", "start": "2026-01-05T00:00', "Unterminated string starting at: line 1 column 26 (char 25)"),
    ("[]", "expected a JSON object, got list"),
    ('{"id": "r-bad", "start": "2026-01-05T00:00:00.000Z"}', "missing end, sources"),
    ('{"id": "r-bad", "start": "a", "end": "b", "sources": [], "pid": "12"}', 'pid should be a whole number, got "12"'),
    ('{"id": "r-bad", "start": "a", "end": "b", "sources": [1]}', "sources holds something other than names"),
])
def test_a_damaged_record_is_moved_aside_with_one_warning_and_replays_go_on(tmp_path, caplog, text, reason):
    registry = ReplayRegistry(tmp_path / "replays")
    (registry.directory / "r-good.json").write_text(json.dumps(GOOD))
    damaged = registry.directory / "r-bad.json"
    damaged.write_text(text)
    with caplog.at_level(logging.WARNING, logger="qraft_core.replays"):
        assert [record.id for record in registry.records()] == ["r-good"]
        assert registry.get("r-bad") is None
        claimed = registry.claim(T0, T0 + timedelta(hours=1), ["binance_spot"])
    assert claimed.status == "running"
    assert not damaged.exists()
    assert (registry.directory / "r-bad.json.damaged").read_text() == text
    assert [r.getMessage() for r in caplog.records] == [
        f"replay record {damaged} is damaged ({reason}); moved aside to r-bad.json.damaged and skipped"]


def test_unknown_keys_of_a_record_are_ignored(tmp_path):
    registry = ReplayRegistry(tmp_path / "replays")
    (registry.directory / "r-good.json").write_text(json.dumps({**GOOD, "written_by": "a later version"}))
    record = registry.get("r-good")
    assert record is not None and (record.status, record.summary) == ("succeeded", {"events": 3})


def test_a_running_record_still_refuses_an_overlapping_replay_next_to_a_damaged_one(tmp_path):
    registry = ReplayRegistry(tmp_path / "replays")
    (registry.directory / "r-bad.json").write_text("{")
    running = registry.claim(T0, T0 + timedelta(hours=1), [])
    with pytest.raises(ReplayConflict, match=f"replay {running.id} of"):
        registry.claim(T0 + timedelta(minutes=30), T0 + timedelta(hours=2), [])


def test_a_file_that_is_not_a_record_name_is_left_alone(tmp_path):
    registry = ReplayRegistry(tmp_path / "replays")
    (registry.directory / "my notes.json").write_text("{}")
    assert registry.records() == [] and registry.running() == []
    assert (registry.directory / "my notes.json").exists()


def test_finishing_a_damaged_record_does_nothing(tmp_path):
    registry = ReplayRegistry(tmp_path / "replays")
    (registry.directory / "r-bad.json").write_text('{"id": "r-bad"')
    registry.finish_if_running("r-bad", -9)
    assert sorted(path.name for path in registry.directory.iterdir()) == ["claims.lock", "r-bad.json.damaged"]


def test_a_record_is_synced_to_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    registry = ReplayRegistry(tmp_path / "replays")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    record = registry.claim(T0, T0 + timedelta(hours=1), [])
    assert synced == [f"{record.id}.tmp", "replays"]
    assert registry.get(record.id) == record


class FailingCounts(MemoryStore):
    """A store that fails when a replay's summary counts what it holds (a store going away mid-replay)."""

    def count(self, table, *args, **kwargs):
        if table == "clean_events":
            raise StoreError("the store went away")
        return super().count(table, *args, **kwargs)


class TellingRunner(FakePipelineRunner):
    """A runner whose run fails, telling why on RUN_FAILURES as the Dagster runner does."""

    def materialize(self, start, end, on_progress):
        logging.getLogger(RUN_FAILURES).error("run r-1 failed at step detections: KeyError: 'value_mean'")
        return WindowRuns(runs=1, failed_runs=["r-1"])


def test_a_store_error_in_the_summary_ends_the_record_failed_and_audits_it(config_dir):
    store = FailingCounts()
    services = bootstrap(config_dir, store=store, tracker=Tracker("", enabled=False), runner=FakePipelineRunner())
    with pytest.raises(StoreError, match="the store went away"):
        services.replays.run(ReplayRequest(T0, T0 + timedelta(minutes=5)))
    [record] = services.replays.status()
    assert (record.status, record.summary) == ("failed", {"error": "StoreError: the store went away"})
    [after] = store.select("audit_log", columns=["after"])["after"].to_list()
    assert json.loads(after) == {"status": "failed", "error": "StoreError: the store went away"}


def test_a_failed_run_is_recorded_with_its_step_and_reason_and_no_counts(config_dir):
    store = MemoryStore()
    services = bootstrap(config_dir, store=store, tracker=Tracker("", enabled=False), runner=TellingRunner())
    result = services.replays.run(ReplayRequest(T0, T0 + timedelta(minutes=5)))
    assert result.status == "failed"
    assert result.summary["error"] == "run r-1 failed at step detections: KeyError: 'value_mean'"
    assert not {"events", "pattern_events", "pattern_events_by_type"} & set(result.summary)
    assert services.replays.status(result.record.id)[0].summary == result.summary
    assert replay_text(result).splitlines()[:2] == [
        f"replay {result.record.id}: failed", "  run r-1 failed at step detections: KeyError: 'value_mean'"]
    [after] = store.select("audit_log", columns=["after"])["after"].to_list()
    assert json.loads(after) == {"status": "failed", "error": result.summary["error"]}


class FailingAudit(MemoryStore):
    def insert(self, table, *args, **kwargs):
        if table == "audit_log":
            raise StoreError("the store is held by another process")
        return super().insert(table, *args, **kwargs)


def test_a_failed_replay_is_reported_even_when_its_audit_row_cannot_be_written(config_dir, caplog):
    services = bootstrap(config_dir, store=FailingAudit(), tracker=Tracker("", enabled=False), runner=TellingRunner())
    with caplog.at_level(logging.WARNING, logger="qraft_core.services.replay"):
        result = services.replays.run(ReplayRequest(T0, T0 + timedelta(minutes=5)))
    assert (result.status, result.summary["error"]) == (
        "failed", "run r-1 failed at step detections: KeyError: 'value_mean'")
    assert [r.getMessage() for r in caplog.records if r.name == "qraft_core.services.replay"] == [
        f"replay {result.record.id}: its audit row was not written (StoreError: the store is held by another process)"]
