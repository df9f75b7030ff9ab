"""The services on the in-memory store with a fake pipeline runner: exact outcomes of each use case."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from qraft_cli.pipeline import SensorHeartbeat
from qraft_cli.replay import replay_text
from qraft_core.annotations import UnknownPattern
from qraft_core.bootstrap import Services, bootstrap
from qraft_core.bus.embedded import process_alive
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.events import AlgorithmInfo, PatternDetails, PatternEvent, PatternExplain
from qraft_core.patterns.materialize import pattern_rows
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns
from qraft_core.replays import ReplayConflict
from qraft_core.services.fake_runner import FakePipelineRunner
from qraft_core.services.pipeline import reset_consumer, run_lander
from qraft_core.services.replay import ReplayRequest
from qraft_core.store.fake import MemoryStore
from qraft_core.supervisor import ProcessSupervisor
from qraft_core.tracking import Tracker, TrackingPause, default_tracking_uri

START = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)


class RecordingTracker(Tracker):
    """A tracker whose MLflow calls are recorded instead of sent; `broken`: every call fails.

    Its pause is its own: a broken tracker does not silence the next test's.
    """

    def __init__(self, broken: bool = False) -> None:
        super().__init__("memory://", enabled=True, pause=TrackingPause())
        self.broken = broken
        self.runs: list[dict[str, Any]] = []

    def _log_run(self, run_name: str, params: Any, metrics: Any, tags: Any) -> str:
        if self.broken:
            raise ConnectionError("MLflow is down")
        self.runs.append({"name": run_name, "params": dict(params), "metrics": dict(metrics), "tags": dict(tags)})
        return "run-1"


def _pattern(minute: int, confidence: float = 0.8) -> PatternEvent:
    at = START + timedelta(minutes=minute)
    return PatternEvent(
        pattern_id=f"p{minute}", type="concept_drift", timestamp=at, window_start=at,
        source_streams=["cpu:host-a"],
        details=PatternDetails(prev_state="value level 1", new_state="value level 5"),
        explain=PatternExplain(top_contributors=[{"field": "value_mean", "score": 1.0}]),
        algorithm=AlgorithmInfo(name="river.ADWIN", version="0.26"), confidence=confidence,
    )


def _services(config_dir: Path, runner: FakePipelineRunner | None = None,
              tracker: Tracker | None = None) -> tuple[Services, MemoryStore]:
    store = MemoryStore()
    return bootstrap(config_dir, store=store, tracker=tracker or RecordingTracker(), runner=runner), store


def _writing(store: MemoryStore, *patterns: PatternEvent) -> FakePipelineRunner:
    """A runner that writes `patterns` when it materializes (as the pipeline would)."""
    return FakePipelineRunner(produce=lambda start, end: store.insert("pattern_events", pattern_rows(list(patterns))))


def test_a_replay_recomputes_records_and_audits_its_window(config_dir: Path) -> None:
    tracker = RecordingTracker()
    store = MemoryStore()
    runner = _writing(store, _pattern(1), _pattern(3))
    runner.detector_seconds = {"value_drift": 1.25, "idle": 0.0}
    services = bootstrap(config_dir, store=store, tracker=tracker, runner=runner)
    progress: list[int] = []

    result = services.replays.run(ReplayRequest(START, END, ("cpu",), actor="ci"), on_progress=progress.append)

    assert runner.materialized == [(START, END)] and progress == [5]
    assert result.status == "succeeded" and result.diff is None
    summary = {k: v for k, v in result.summary.items() if k not in ("id", "seconds", "config_hash")}
    assert summary == {
        "start": "2026-01-05T01:00:00.000Z", "end": "2026-01-05T01:05:00.000Z", "sources": ["cpu"],
        "runs": 5, "failed_runs": [], "partitions": 5, "events": 0, "dead_letters": 0,
        "dead_letters_by_reason": {}, "pattern_events": 2, "pattern_events_by_type": {"concept_drift": 2},
        "no_data": True, "detector_seconds": {"value_drift": 1.25, "idle": 0.0}, "status": "succeeded",
        "detector_failures": {}, "detector_first_failure": {},
    }
    assert services.replays.status(result.record.id)[0].status == "succeeded"
    audit = store.select("audit_log").to_dicts()
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("ci", "replay", "[2026-01-05T01:00:00.000Z, 2026-01-05T01:05:00.000Z)")]
    assert json.loads(audit[0]["after"]) == {"status": "succeeded", "events": 0,
                                             "pattern_events_by_type": {"concept_drift": 2}}
    [run] = tracker.runs
    assert run["tags"] == {"qraft.kind": "replay", "qraft.status": "succeeded", "qraft.replay_id": result.record.id}
    assert run["params"]["sources"] == "cpu"
    assert {k: v for k, v in run["metrics"].items() if k != "seconds"} == {
        "events": 0, "pattern_events": 2, "partitions": 5, "pattern_events.concept_drift": 2,
        "detector_seconds.value_drift": 1.25, "detector_seconds.idle": 0.0}


def test_the_replay_text_names_the_slowest_detector_first(config_dir: Path) -> None:
    runner = FakePipelineRunner(detector_seconds={"value_outlier": 0.5, "value_drift": 1.25, "idle": 0.0})
    services, _ = _services(config_dir, runner)
    text = replay_text(services.replays.run(ReplayRequest(START, END)))
    assert text.splitlines()[-1] == "  detector seconds: value_drift 1.25, value_outlier 0.50, idle 0.00"


def test_the_replay_text_lists_the_detectors_that_failed_with_their_first_error(config_dir: Path) -> None:
    runner = FakePipelineRunner(detector_failures={"value_drift": 3, "value_outlier": 1},
                                detector_first_failure={"value_drift": "ValueError: bad bars\x1b[2J"})
    services, _ = _services(config_dir, runner)
    text = replay_text(services.replays.run(ReplayRequest(START, END)))
    assert text.splitlines()[-3:] == [
        "  detector failures (each restarted on its stream, the run went on):",
        r"    value_drift: 3; first: ValueError: bad bars\x1b[2J",
        "    value_outlier: 1",
    ]


def test_a_replay_run_in_a_real_mlflow_store_carries_each_detectors_seconds(config_dir: Path, tmp_path: Path) -> None:
    import mlflow

    tracker = Tracker(default_tracking_uri(tmp_path), experiment="replays")
    store = MemoryStore()
    runner = FakePipelineRunner(detector_seconds={"value_drift": 1.25, "value_outlier": 0.5})
    result = bootstrap(config_dir, store=store, tracker=tracker, runner=runner).replays.run(ReplayRequest(START, END))

    client = mlflow.MlflowClient(tracking_uri=tracker.tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("replays").experiment_id])
    assert run.data.tags["qraft.replay_id"] == result.record.id
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("detector_seconds.")} == {
        "detector_seconds.value_drift": 1.25, "detector_seconds.value_outlier": 0.5}


def test_a_window_overlapping_a_running_replay_is_refused_before_any_work(config_dir: Path) -> None:
    runner = FakePipelineRunner()
    services, store = _services(config_dir, runner)
    running = services.replays.claim(ReplayRequest(START + timedelta(minutes=4), END + timedelta(minutes=10)))

    with pytest.raises(ReplayConflict, match=f"replay {running.id} of"):
        services.replays.run(ReplayRequest(START, END))

    assert runner.materialized == [] and store.count("audit_log") == {"": 0}
    assert [r.status for r in services.replays.status()] == ["running"]


def test_a_replay_compares_with_its_golden_file(config_dir: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    store = MemoryStore()
    services = bootstrap(config_dir, store=store, tracker=RecordingTracker(), runner=_writing(store, _pattern(2)))
    written = services.replays.run(ReplayRequest(START, END, golden=golden, write_golden=True))
    assert written.summary["golden_written"] == str(golden)
    assert [p["timestamp"] for p in json.loads(golden.read_text())["patterns"]] == ["2026-01-05T01:02:00.000Z"]

    same = services.replays.run(ReplayRequest(START, END, golden=golden))
    assert same.status == "succeeded" and same.diff is not None and not same.diff.regression

    document = json.loads(golden.read_text())
    document["patterns"][0]["confidence"] = 0.5
    golden.write_text(json.dumps(document))
    changed = services.replays.run(ReplayRequest(START, END, golden=golden))
    assert changed.status == "regression"
    assert changed.summary["golden"]["changed"] == [{
        "key": {"type": "concept_drift", "timestamp": "2026-01-05T01:02:00.000Z", "streams": ["cpu:host-a"]},
        "fields": {"confidence": {"golden": 0.5, "replayed": 0.8}},
    }]


def test_a_broken_golden_file_or_window_is_refused_before_the_claim(config_dir: Path, tmp_path: Path) -> None:
    runner = FakePipelineRunner()
    services, _ = _services(config_dir, runner)
    wrong = tmp_path / "golden.json"
    wrong.write_text(json.dumps({"version": 99, "patterns": []}))
    with pytest.raises(ConfigError, match="version: expected 1, got 99"):
        services.replays.run(ReplayRequest(START, END, golden=wrong))
    with pytest.raises(ConfigError, match="outside the partitions"):
        services.replays.run(ReplayRequest(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)))
    assert runner.materialized == [] and services.replays.status() == []


def test_an_mlflow_outage_does_not_fail_the_replay(config_dir: Path) -> None:
    services, store = _services(config_dir, FakePipelineRunner(), RecordingTracker(broken=True))
    result = services.replays.run(ReplayRequest(START, END))
    assert result.status == "succeeded"
    assert store.count("audit_log") == {"": 1}


def test_failed_and_crashed_runs_end_the_record(config_dir: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"version": 1, "window": {}, "engines": [], "patterns": []}))
    services, _ = _services(config_dir, FakePipelineRunner(fail=True))
    failed = services.replays.run(ReplayRequest(START, END, golden=golden))
    assert (failed.status, failed.summary["failed_runs"], failed.diff) == ("failed", ["fake-run-1"], None)

    def crash(start: datetime, end: datetime) -> None:
        raise KeyboardInterrupt

    crashing, _ = _services(config_dir, FakePipelineRunner(produce=crash))
    with pytest.raises(KeyboardInterrupt):
        crashing.replays.run(ReplayRequest(START + timedelta(hours=1), END + timedelta(hours=1)))
    newest = crashing.replays.status()[0]
    assert (newest.status, newest.summary) == ("failed", {"error": "KeyboardInterrupt: "})


def test_without_a_runner_a_replay_says_so(config_dir: Path) -> None:
    services, _ = _services(config_dir)
    with pytest.raises(ConfigError, match="no pipeline runner"):
        services.replays.run(ReplayRequest(START, END))


def test_the_injected_store_is_the_one_every_service_uses(config_dir: Path) -> None:
    services, store = _services(config_dir)
    assert services.store is store and services.runtime.store is store
    assert services.patterns.store is store and services.sources.store is store


def test_patterns_are_listed_shown_and_annotated(config_dir: Path) -> None:
    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1), _pattern(2, 0.4)]))
    patterns = services.patterns
    query = patterns.query(since=START, until=END, min_confidence=0.5)
    assert [p.pattern_id for p in patterns.list(query, 10)] == ["p1"]
    assert patterns.count(patterns.query(since=START, until=END)) == 2
    # A source means all of its streams (p1 and p2 are on cpu:host-a), as in the API.
    assert patterns.count(patterns.query(since=START, until=END, source="cpu")) == 2
    assert patterns.count(patterns.query(since=START, until=END, source="cpu:host-a")) == 2
    assert patterns.count(patterns.query(since=START, until=END, source="cpu:host-b")) == 0
    annotation = patterns.annotate("p1", "confirmed", "seen it", "ana", actor="ci")
    assert (annotation.pattern_id, annotation.label, annotation.author) == ("p1", "confirmed", "ana")
    with pytest.raises(UnknownPattern, match="no pattern with id 'nope'"):
        patterns.annotate("nope", "note")
    with pytest.raises(UnknownPattern):
        patterns.show("nope")


def test_an_export_cut_short_leaves_no_file_behind(config_dir: Path, tmp_path: Path) -> None:
    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1)]))
    out = tmp_path / "patterns.csv"

    def interrupted(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        services.patterns.export(services.patterns.query(since=START, until=END), "csv", out, interrupted)
    assert list(tmp_path.iterdir()) == [config_dir]


def test_patterns_export_writes_the_whole_file(config_dir: Path, tmp_path: Path) -> None:
    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1), _pattern(2)]))
    out = tmp_path / "patterns.json"
    pages: list[int] = []
    summary = services.patterns.export(services.patterns.query(since=START, until=END, capped=False), "json",
                                       out, pages.append)
    assert summary == {"patterns": 2, "format": "json", "out": str(out),
                       "start": "2026-01-05T01:00:00.000Z", "end": "2026-01-05T01:05:00.000Z"}
    assert [p["pattern_id"] for p in json.loads(out.read_text())] == ["p1", "p2"] and sum(pages) == 2
    assert not list(tmp_path.glob(".*partial"))


def test_an_export_to_a_symlink_writes_its_target_and_keeps_the_link(config_dir: Path, tmp_path: Path) -> None:
    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1)]))
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("keep")
    link.symlink_to(target.name)
    services.patterns.export(services.patterns.query(since=START, until=END), "json", link)
    assert link.is_symlink() and [p["pattern_id"] for p in json.loads(target.read_text())] == ["p1"]
    assert not list(tmp_path.glob(".*partial"))


def test_an_export_to_a_fifo_is_written_through_not_replaced(config_dir: Path, tmp_path: Path) -> None:
    import stat
    import threading

    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1)]))
    fifo = tmp_path / "patterns.json"
    os.mkfifo(fifo)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()), daemon=True)
    reader.start()
    services.patterns.export(services.patterns.query(since=START, until=END), "json", fifo)
    reader.join(timeout=10)  # only waited out when the FIFO was replaced and the reader never gets data
    assert stat.S_ISFIFO(fifo.stat().st_mode) and [p["pattern_id"] for p in json.loads(read[0])] == ["p1"]


def test_a_source_is_added_then_replaced_and_a_bad_one_leaves_the_file_alone(config_dir: Path) -> None:
    services, store = _services(config_dir)
    path = config_dir / "sources.yaml"
    source = SourceConfig(name="cpu", type="file", endpoint="data/cpu.csv", parser="generic")
    assert services.sources.put(source, "ci")["created"] is True
    replaced = services.sources.put(source.model_copy(update={"endpoint": "data/cpu2.csv"}), "ci")
    assert replaced == {"source": {"name": "cpu", "type": "file", "endpoint": "data/cpu2.csv"},
                        "created": False}
    entries = yaml.safe_load(path.read_text())["sources"]
    assert [e["endpoint"] for e in entries if e["name"] == "cpu"] == ["data/cpu2.csv"]
    before = path.read_text()
    with pytest.raises(ConfigError):
        services.sources.put(SourceConfig(name="bad", type="no_such_type", endpoint="x"), "ci")
    assert path.read_text() == before
    assert [a["action"] for a in store.select("audit_log").to_dicts()] == ["config.sources"] * 2
    assert [row["name"] for row in services.sources.status()] == [e["name"] for e in entries]


def test_the_process_supervisor_restarts_a_child_that_exits(tmp_path: Path) -> None:
    supervisor = ProcessSupervisor({"short": [sys.executable, "-c", "print('hello')"]}, {}, tmp_path / "logs",
                                   restart_initial_s=0.0, stop_grace_s=5)
    supervisor.start()
    child = supervisor.children["short"]
    assert child.process is not None
    first = child.process
    first.wait()
    reports: list[str] = []
    supervisor.check(reports.append)  # notices the exit
    supervisor.check(reports.append)  # its backoff (none here) has passed: restarted
    assert reports == ["short exited with 0; restarting in 0s"]
    assert child.process is not first
    child.process.wait()
    supervisor.stop()
    assert (tmp_path / "logs" / "short.log").read_text() == "hello\nhello\n"


def test_the_replay_worker_refuses_an_id_nobody_claimed(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qraft_cli.worker import main

    assert main(["--config-dir", str(config_dir), "replay", "../etc"]) == 2
    assert main(["--config-dir", str(config_dir), "replay", "r-unknown"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: not a replay id: '../etc'",
                                                    "error: no replay r-unknown was claimed"]


def test_a_file_source_is_published_and_landed_on_the_memory_bus(config_dir: Path, tmp_path: Path) -> None:
    readings = tmp_path / "cpu.csv"
    readings.write_text("id,at,host,value\n"
                        "r1,2026-01-05T01:00:01Z,host-a,0.5\n"
                        "r2,2026-01-05T01:00:02Z,host-b,0.7\n"
                        "r3,,host-a,0.9\n"
                        "r4,2026-01-05T01:01:00Z,host-a,0.6\n")
    (config_dir / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "cpu", "type": "file", "endpoint": str(readings), "parser": "generic",
        "options": {"id_field": "id", "time_field": "at", "event_type": "reading", "required": ["id", "at"]},
    }]}))
    store, bus, runner = MemoryStore(), MemoryBus(), FakePipelineRunner()
    services = bootstrap(config_dir, store=store, bus=bus, tracker=RecordingTracker(), runner=runner)
    said: list[str] = []

    result = services.pipeline.run_file_sources(said.append, lambda key, ok: None)

    assert {k: v for k, v in result.items() if k != "landing_events_per_s"} == {
        "published": {"cpu": {"published": 3, "dead_lettered": 1}}, "landed": 3, "dead_lettered_at_landing": 1,
        "runs": {"succeeded": 1, "failed": 0, "windows_materialized": {}},
    }
    assert said[0] == "1/3 publishing the file sources to the bus …"
    assert [(r["event_id"], r["timestamp"].isoformat()) for r in store.select("raw_events").to_dicts()] == [
        ("cpu:r1", "2026-01-05T01:00:01+00:00"), ("cpu:r2", "2026-01-05T01:00:02+00:00"),
        ("cpu:r4", "2026-01-05T01:01:00+00:00"),
    ]
    assert [(d["stage"], d["reason"], d["raw"]) for d in store.select("dead_letters").to_dicts()] == [
        ("land", "adapter: record lacks required field(s): at", "r3,,host-a,0.9")]
    assert bus.queue == deque() and not (tmp_path / "data" / "nats").exists()  # no NATS server was started
    # Forgetting the lander's consumer makes the next lander read the stream again from its start.
    rt = services.pipeline.rt
    assert asyncio.run(reset_consumer(rt, bus)) is True and asyncio.run(reset_consumer(rt, bus)) is False
    again = asyncio.run(run_lander(rt, until_idle=True, bus=bus))
    # Both messages come again; their events are already stored, so nothing lands twice.
    assert (again.messages, again.landed) == (2, 0)
    assert store.count("raw_events") == {"": 3} and store.count("dead_letters") == {"": 1}


def test_a_patterns_context_annotations_and_verdict_stats_are_use_cases(config_dir: Path) -> None:
    services, store = _services(config_dir)
    drift, anomaly, _, _ = example_patterns()
    store.insert("clean_events", example_clean_events())
    store.insert("pattern_events", pattern_rows([drift, anomaly]))
    patterns = services.patterns

    first = patterns.context(drift.pattern_id, 20)
    rest = patterns.context(drift.pattern_id, 20, first.next_cursor)
    # The drift at 10:32:15 looks 5 minutes either side: [10:27, 10:38) holds 22 trades (one every 30 s);
    # the headlines and readings of other sources in that span are not its context.
    assert (first.as_json()["start"], first.as_json()["end"]) == ("2026-01-05T10:27:00.000Z", "2026-01-05T10:38:00.000Z")
    assert (first.as_json()["count"], len(rest.rows), rest.next_cursor) == (20, 2, None)
    rows = first.rows + rest.rows
    assert {r["source"] for r in rows} == {"binance_spot"}
    assert [r["timestamp"] for r in (rows[0], rows[-1])] == ["2026-01-05T10:27:00.000Z", "2026-01-05T10:37:30.000Z"]

    patterns.annotate(drift.pattern_id, "confirmed", "real move", "ana")
    patterns.annotate(drift.pattern_id, "note", "again on Monday", "bo")
    patterns.annotate(anomaly.pattern_id, "false_alarm")
    assert [(a.label, a.author) for a in patterns.annotations(drift.pattern_id)] == [
        ("confirmed", "ana"), ("note", "bo")]
    # The drift was found by two engines: its verdict counts for each.
    assert patterns.annotation_stats() == {
        "capymoa.ADWIN": {"confirmed": 1, "false_alarm": 0, "notes": 1, "precision": 1.0},
        "river.ADWIN": {"confirmed": 1, "false_alarm": 0, "notes": 1, "precision": 1.0},
        "river.HalfSpaceTrees": {"confirmed": 0, "false_alarm": 1, "notes": 0, "precision": 0.0},
    }
    for use_case in (lambda: patterns.annotations("nope"), lambda: patterns.context("nope", 10)):
        with pytest.raises(UnknownPattern, match="no pattern with id 'nope'"):
            use_case()


def test_annotation_text_cannot_forge_card_lines(config_dir: Path) -> None:
    services, store = _services(config_dir)
    store.insert("pattern_events", pattern_rows([_pattern(1)]))
    patterns = services.patterns
    patterns.annotate("p1", "note", "seen twice\n- **Confidence** 0.01", "ana")
    [annotation] = patterns.annotations("p1")
    assert annotation.note == "seen twice\n- **Confidence** 0.01"  # stored as written
    markdown = patterns.show("p1").markdown
    # One line, its markup shown as written.
    assert r"seen twice - \*\*Confidence\*\* 0.01" in markdown and "\n- **Confidence**" not in markdown
    with pytest.raises(ValueError, match="^note: control characters other than line breaks and tabs"):
        patterns.annotate("p1", "note", "a\x00b")
    with pytest.raises(ValueError, match="^author: control characters are not allowed"):
        patterns.annotate("p1", "confirmed", author="ana\n- forged")
    assert len(patterns.annotations("p1")) == 1


# A child that starts a grandchild in its own process group, writes the grandchild's pid, then exits
# (or, given "stay", sleeps). The grandchild ignores SIGTERM, as a busy server may.
LEAVES_A_GRANDCHILD = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c",
                               "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(600 if sys.argv[2:] == ["stay"] else 0)
"""


def _grandchild(pid_file: Path) -> int:
    assert _wait(lambda: pid_file.exists() and pid_file.read_text() != "")
    return int(pid_file.read_text())


def _wait(predicate: Any, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_dead_childs_process_group_is_gone_before_the_child_is_restarted(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    supervisor = ProcessSupervisor({"parent": [sys.executable, "-c", LEAVES_A_GRANDCHILD, str(pid_file)]}, {},
                                   tmp_path / "logs", restart_initial_s=60, stop_grace_s=5)
    supervisor.start()
    try:
        grandchild = _grandchild(pid_file)
        child = supervisor.children["parent"]
        assert child.process is not None
        os.waitid(os.P_PID, child.process.pid, os.WEXITED | os.WNOWAIT)  # exited, left for the supervisor to reap
        assert process_alive(grandchild)  # outlives its parent, as `dagster dev`'s servers do
        reports: list[str] = []
        supervisor.check(reports.append)
        # Gone at once, not at the restart: it would hold the port and instance of the restarted child.
        assert _wait(lambda: not process_alive(grandchild))
        assert len(reports) == 1 and reports[0].startswith("parent exited with 0; restarting in ")
        assert child.process.returncode == 0  # reaped, not restarted yet
    finally:
        supervisor.stop()


def test_stop_ends_what_a_child_that_already_exited_left_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    supervisor = ProcessSupervisor({"parent": [sys.executable, "-c", LEAVES_A_GRANDCHILD, str(pid_file)]}, {},
                                   tmp_path / "logs", stop_grace_s=5)
    supervisor.start()
    grandchild = _grandchild(pid_file)
    supervisor.stop()
    assert _wait(lambda: not process_alive(grandchild))


def test_a_child_that_runs_but_no_longer_works_is_restarted_with_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    supervisor = ProcessSupervisor({"parent": [sys.executable, "-c", LEAVES_A_GRANDCHILD, str(pid_file), "stay"]},
                                   {}, tmp_path / "logs", restart_initial_s=0, stop_grace_s=0.5)
    supervisor.start()
    try:
        grandchild = _grandchild(pid_file)
        pid_file.write_text("")
        child = supervisor.children["parent"]
        first = child.process
        reports: list[str] = []
        supervisor.restart("parent", "is stuck", reports.append)
        supervisor.restart("parent", "is stuck", reports.append)  # already restarting: once is enough
        assert _wait(lambda: supervisor.check(reports.append) or child.process is not first)
        assert not process_alive(grandchild)  # it ignored SIGTERM: killed after the grace time
        assert reports == ["parent is stuck; restarting it in 0s"]
        assert process_alive(_grandchild(pid_file))  # the new child runs
    finally:
        supervisor.stop()


class SilentSensor(SensorHeartbeat):
    """The heartbeat with the window sensor's last tick given, not read from an instance."""

    def __init__(self, supervisor: ProcessSupervisor, heard: tuple[float | None, int | None] | None) -> None:
        super().__init__(supervisor, "dagster", Path("dagster-home"), Path("workspace.yaml"))
        self.heard = heard

    def last_tick(self) -> tuple[float | None, int | None] | None:
        return self.heard


@pytest.mark.parametrize(("running_s", "tick_ago_s", "restarted"), [
    (3600, (1800, 10), True),  # no tick for half an hour
    (3600, (None, None), True),  # never ticked since it started an hour ago
    (3600, (20, 10), False),  # ticks
    (3600, None, False),  # a user stopped the sensor
    (10, (1800, 10), False),  # starting up
])
def test_dagster_is_restarted_when_the_window_sensor_has_been_silent_for_long(
        tmp_path: Path, running_s: float, tick_ago_s: tuple[float | None, int | None] | None, restarted: bool) -> None:
    # (How long ago the last tick was, not when: the parameters are made when the tests are collected.)
    heard = None if tick_ago_s is None else (
        None if tick_ago_s[0] is None else time.time() - tick_ago_s[0], tick_ago_s[1])
    supervisor = ProcessSupervisor({"dagster": [sys.executable, "-c", "import time; time.sleep(600)"]}, {},
                                   tmp_path / "logs", stop_grace_s=5)
    supervisor.start()
    try:
        supervisor.children["dagster"].started_at -= running_s
        reports: list[str] = []
        SilentSensor(supervisor, heard).check(reports.append)
        assert (supervisor.children["dagster"].restart_at is not None) == restarted
        assert len(reports) == restarted
        if restarted:
            assert re.fullmatch(r"dagster has run no window sensor tick since (\d\d:\d\d:\d\d|its start); "
                                r"restarting it in [01]s", reports[0]), reports
    finally:
        supervisor.stop()
