"""Replay records on disk: a damaged one is skipped (moved aside, one warning), never blocking replays."""

import json
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.replays import ReplayConflict, ReplayRegistry

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
