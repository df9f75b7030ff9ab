"""Ground truth files that cannot be scored are refused naming the file, the key and what was expected;
the early allowance follows the stream's bar size."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.evaluate import Item, Truth, evaluate_findings, evaluate_store, load_truth
from qraft_core.store.fake import MemoryStore

WINDOW = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-03T02:00:00Z"}
ITEM = {"id": "x", "type": "anomaly", "stream": "m", "time": "2024-03-01T10:00:00Z"}
TYPES = "concept_drift, anomaly, cluster_change, freq_pattern"


def truth_file(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "truth.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def with_item(**changes: Any) -> dict[str, Any]:
    return {"version": 1, "window": WINDOW, "patterns": [{**ITEM, **changes}]}


@pytest.mark.parametrize(("data", "message"), [
    ([], '(top level): expected an object {"version", "window", "patterns": [...]}, got a list'),
    ("", "not a ground truth file (not JSON: Expecting value: line 1 column 1 (char 0))"),
    (with_item(time=1709287200),
     "patterns[0].time: expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got a number (1709287200)"),
    (with_item(time=None), "patterns[0].time: expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got null"),
    (with_item(time="10000-03-01T10:00:00Z"),
     "patterns[0].time: expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got '10000-03-01T10:00:00Z'"),
    (with_item(time="1850-03-01T10:00:00Z"),
     "patterns[0].time: '1850-03-01T10:00:00Z' is outside the years 1900-2299 the store holds"),
    ({"version": 1, "window": WINDOW, "patterns": [
        {"id": "w", "type": "anomaly", "stream": "m", "window": {"start": 5, "end": 6}}]},
     "patterns[0].window.start: expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got a number (5)"),
    ({"version": 1, "window": WINDOW, "patterns": [
        {"id": "w", "type": "anomaly", "stream": "m", "window": "09:00"}]},
     'patterns[0].window: expected an object {"start", "end"} of ISO 8601 times, got a string ("09:00")'),
    ({"version": 1, "window": WINDOW, "patterns": [
        {"id": "w", "type": "anomaly", "stream": "m", "window": {"start": "2024-03-01T09:00:00Z"}}]},
     'patterns[0].window: needs both "start" and "end" (ISO 8601 times)'),
    ({"version": 1, "window": WINDOW, "patterns": [{"id": "w", "type": "anomaly", "stream": "m"}]},
     'patterns[0]: needs a "time" or a "window" {"start", "end"}'),
    (with_item(type=["anomaly"]), f"patterns[0].type: expected one of {TYPES}, got a list"),
    (with_item(type="anomally"), f"patterns[0].type: expected one of {TYPES}, got 'anomally'"),
    (with_item(stream=""), "patterns[0].stream: expected a stream name such as binance_spot:BTCUSDT, got ''"),
    (with_item(id=7), "patterns[0].id: expected a string, got a number (7)"),
    ({"version": 1, "window": WINDOW, "patterns": [None]},
     'patterns[0]: expected an object {"id", "type", "stream", "time"}, got null'),
    ({"version": 1, "window": WINDOW, "patterns": {"a": 1}}, "patterns: expected a list of truth items, got an object"),
    ({"version": 1, "window": WINDOW}, "patterns: missing (expected a list of truth items)"),
    ({**with_item(), "tolerance_s": 1e999},
     "tolerance_s: expected a number of seconds from 0 to 31622400 (a year), got inf"),
    ({**with_item(), "tolerance_s": "NaN"}, 'tolerance_s: expected a number of seconds, got a string ("NaN")'),
    ({**with_item(), "tolerance_s": -5}, "tolerance_s: expected a number of seconds from 0 to 31622400 (a year), got -5"),
    ({**with_item(), "tolerance_s": True}, "tolerance_s: expected a number of seconds, got a boolean (true)"),
    ({**with_item(), "early_s": -1}, "early_s: expected a number of seconds from 0 to 31622400 (a year), got -1"),
    ({**with_item(), "version": 2}, "version: expected 1 (the only version this Qraft reads), got 2"),
    ({**with_item(), "window": "all"}, 'window: expected an object {"start", "end"} of ISO 8601 times, got a string ("all")'),
    ({**with_item(), "window": {"start": "2024-03-03T00:00:00Z", "end": "2024-03-01T00:00:00Z"}},
     "window: end (2024-03-01T00:00:00.000Z) is before start (2024-03-03T00:00:00.000Z)"),
    ({"version": 1, "window": WINDOW, "patterns": [ITEM, {**ITEM, "time": "2024-03-01T11:00:00Z"}]},
     "patterns[1].id: 'x' is already the id of patterns[0]"),
    ('{"version": 1, "version": 2, "patterns": []}', "version: given twice (only one value can be scored)"),
    ('{"patterns": [{"type": "anomaly", "stream": "m", "time": "2024-03-01T10:00:00Z", '
     '"time": "2024-03-01T11:00:00Z"}]}', "patterns[0].time: given twice (only one value can be scored)"),
    (with_item(severity=3), "patterns[0].severity: an unknown key (expected one of id, type, stream, time, window, "
                            "description, details)"),
    (with_item(window={"start": "2024-03-01T09:00:00Z", "stop": "2024-03-01T11:00:00Z"}),
     "patterns[0].window.stop: an unknown key (expected one of start, end)"),
    (with_item(id=""), "patterns[0].id: expected a name, got '' (leave the id out for none)"),
    (with_item(window={"start": "2024-03-01T11:00:00Z", "end": "2024-03-01T12:00:00Z"}),
     "patterns[0].time: 2024-03-01T10:00:00.000Z is outside the item's window [2024-03-01T11:00:00.000Z, "
     "2024-03-01T12:00:00.000Z] (with a window, the time is the onset delays count from)"),
    ("[" * 100_000 + "]" * 100_000, "not a ground truth file (JSON nested too deeply)"),
])
def test_a_truth_file_it_cannot_score_is_refused_naming_the_key(tmp_path: Path, data: Any, message: str) -> None:
    path = truth_file(tmp_path, data)
    with pytest.raises(ValueError) as refused:
        load_truth(path)
    assert str(refused.value) == f"{path}: {message}"


def test_items_without_ids_are_not_duplicates_and_a_null_time_with_a_window_is_its_start(tmp_path: Path) -> None:
    truth = load_truth(truth_file(tmp_path, {"patterns": [
        {"type": "anomaly", "stream": "m", "time": "2024-03-01T10:00:00Z"},
        {"type": "anomaly", "stream": "m", "time": None,
         "window": {"start": "2024-03-01T11:00:00Z", "end": "2024-03-01T12:00:00Z"}}]}))
    assert [(t.id, t.time.hour) for t in truth.items] == [("", 10), ("", 11)]
    assert (truth.tolerance_s, truth.early_s, truth.start) == (180.0, None, None)


def test_the_cli_refuses_a_bad_truth_file_with_exit_2_and_no_traceback(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    path = truth_file(tmp_path, with_item(type=["anomaly"]))
    message = f"{path}: patterns[0].type: expected one of {TYPES}, got a list"
    refused = CliRunner().invoke(main, ["evaluate", "--truth", str(path)])
    assert refused.exit_code == 2 and refused.exception is not None and isinstance(refused.exception, SystemExit)
    assert refused.output.splitlines()[-1] == f"Error: {message}"
    # With --json, the error is on stdout for the script reading it.
    refused = CliRunner().invoke(main, ["evaluate", "--truth", str(path), "--json"])
    assert (refused.exit_code, json.loads(refused.stdout)) == (2, {"error": message})


T0 = datetime(2024, 3, 2, 6, tzinfo=UTC)
DRIFT = Truth([Item("concept_drift", "m", T0, "d1")], 180, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
EARLY = [Item("concept_drift", "m", T0 - timedelta(minutes=1), "f1")]  # found 05:59 for a shift labelled 06:00


def test_the_early_allowance_is_two_bars_of_the_streams_own_bar_size() -> None:
    def outcome(**options: Any) -> tuple[Any, Any, Any]:
        report = evaluate_findings(EARLY, DRIFT, DRIFT.start, DRIFT.end, 1000, **options)  # type: ignore[arg-type]
        return report["findings"][0]["truth_id"], report["early_s"], report["early_s_by_stream"]

    assert outcome() == (None, 20.0, {"m": 20.0})  # no bar size known: two 10 s bars
    assert outcome(bar_seconds=lambda stream: 60) == ("d1", 120.0, {"m": 120.0})  # 1-minute bars: two minutes
    assert outcome(bar_seconds=lambda stream: 60, early_s=30.0) == (None, 30.0, {"m": 30.0})  # --early-s wins
    from_file = Truth(DRIFT.items, 180, DRIFT.start, DRIFT.end, early_s=90.0)
    report = evaluate_findings(EARLY, from_file, T0 - timedelta(hours=1), T0 + timedelta(hours=1), 1000,
                               bar_seconds=lambda stream: 10)
    assert (report["findings"][0]["truth_id"], report["early_s"]) == ("d1", 90.0)  # the file's early_s wins


def test_streams_of_other_bar_sizes_get_their_own_allowance() -> None:
    truth = Truth([Item("anomaly", "cpu", T0, "c"), Item("anomaly", "fx:EURUSD", T0, "f")], 180,
                  T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    found = [Item("anomaly", "cpu", T0 - timedelta(seconds=500), "f-cpu"),
             Item("anomaly", "fx:EURUSD", T0 - timedelta(seconds=25), "f-fx")]
    report = evaluate_findings(found, truth, T0 - timedelta(hours=1), T0 + timedelta(hours=1), 10,
                               bar_seconds=lambda stream: 300 if stream == "cpu" else 10)
    assert report["early_s"] is None and report["early_s_by_stream"] == {"cpu": 600.0, "fx:EURUSD": 20.0}
    assert [(f["finding_id"], f["truth_id"]) for f in report["findings"]] == [("f-cpu", "c"), ("f-fx", None)]


def test_truth_on_a_stream_without_events_or_findings_is_warned_of_not_refused(tmp_path: Path) -> None:
    path = truth_file(tmp_path, {"version": 1, "window": WINDOW, "patterns": [
        ITEM, {**ITEM, "id": "y", "stream": "nosuch"}]})
    report = evaluate_store(MemoryStore(), path)
    assert report["warnings"] == [
        "stream 'm' of truth item(s) x has no events or findings in the window (streams seen: none)",
        "stream 'nosuch' of truth item(s) y has no events or findings in the window (streams seen: none)"]
    assert report["detectors"]["overall"]["truth"] == 2


def test_the_cli_warns_on_stderr_and_in_json_and_reads_early_s(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from qraft_core.plugins.markets.examples import example_patterns

    drift = next(p for p in example_patterns() if p.type.value == "concept_drift")
    stored = [drift.model_copy(update={"timestamp": T0 - timedelta(minutes=1), "pattern_id": "f1",
                                       "source_streams": ["m"], "details": drift.details.model_copy(
                                           update={"change_point": None})})]
    monkeypatch.setattr("qraft_core.patterns.materialize.load_pattern_events", lambda store, start, end: stored)
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    path = truth_file(tmp_path, {"version": 1, "window": WINDOW, "patterns": [
        {"id": "d1", "type": "concept_drift", "stream": "m", "time": "2024-03-02T06:00:00Z"},
        {"id": "y", "type": "anomaly", "stream": "nosuch", "time": "2024-03-01T10:00:00Z"}]})
    warning = "stream 'nosuch' of truth item(s) y has no events or findings in the window (streams seen: m)"
    # The repository's configuration has 10 s bars: a finding a minute early is a false alarm by default.
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["early_s"], report["warnings"], report["findings"][0]["truth_id"]) == (20.0, [warning], None)
    assert result.stderr == f"warning: {warning}\n"
    widened = json.loads(CliRunner().invoke(
        main, ["evaluate", "--truth", str(path), "--json", "--early-s", "60"]).stdout)
    assert (widened["early_s"], widened["findings"][0]["truth_id"]) == (60.0, "d1")
    human = CliRunner().invoke(main, ["evaluate", "--truth", str(path), "--early-s", "60"])
    assert human.stdout.splitlines()[0].startswith(f"window {WINDOW['start'][:19]}.000Z .. ")
    assert ", tolerance 180s, early 60s, 0 events" in human.stdout.splitlines()[0]
    for bad, said in ((["--early-s", "-1"], "Invalid value for '--early-s': -1.0 is not in the range 0<=x<=31622400."),
                      (["--early-s", "nan"], "Error: --early-s: expected a number of seconds from 0 to 31622400 "
                                             "(a year), got nan"),
                      (["--start", "noon"], "Error: Invalid value for '--start': 'noon' is not an ISO 8601 time "
                                            "(e.g. 2026-01-05T10:00:00Z)")):
        refused = CliRunner().invoke(main, ["evaluate", "--truth", str(path), *bad])
        assert refused.exit_code == 2 and refused.stderr.splitlines()[-1].endswith(said), refused.stderr


def test_evaluate_reads_any_iso_time_the_other_commands_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    path = truth_file(tmp_path, with_item())
    result = CliRunner().invoke(main, ["evaluate", "--truth", str(path), "--json", "--start", "2024-03-01T02:00:00+02:00",
                                       "--end", "2024-03-01T12:30"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["window"] == {"start": "2024-03-01T00:00:00.000Z", "end": "2024-03-01T12:30:00.000Z"}


def test_a_time_inside_its_window_is_the_onset_and_the_window_is_matched(tmp_path: Path) -> None:
    truth = load_truth(truth_file(tmp_path, with_item(
        window={"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T12:00:00Z"}, description="spike", details={})))
    assert [(t.time.hour, t.start.hour if t.start else None) for t in truth.items] == [(10, 9)]


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "truth.json"
    os.mkfifo(fifo)  # no writer ever comes: reading it would wait forever
    with pytest.raises(ValueError) as refused:
        load_truth(fifo)
    assert str(refused.value) == f"{fifo}: cannot read the ground truth file (not a regular file)"
    config = tmp_path / "config"
    config.mkdir()
    os.mkfifo(config / "qraft.yaml")
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["--config-dir", str(config), "config", "validate"])
    assert (result.exit_code, result.stderr) == (2, f"error: {config}/qraft.yaml: cannot be read (not a regular file)\n")


def test_truth_items_outside_the_window_are_named_and_an_overlapping_window_is_scored() -> None:
    start, end = T0, T0 + timedelta(hours=1)
    truth = Truth([Item("anomaly", "m", T0 + timedelta(minutes=5), "in"),
                   Item("anomaly", "m", T0 - timedelta(seconds=1), "before"),
                   Item("anomaly", "m", end, "at-end"),  # the end is exclusive
                   Item("anomaly", "m", T0 - timedelta(minutes=10), "overlaps",
                        T0 - timedelta(minutes=10), T0 + timedelta(minutes=10)),
                   Item("anomaly", "m", end + timedelta(minutes=1), "later", end + timedelta(minutes=1),
                        end + timedelta(minutes=2))], 180, start, end)
    report = evaluate_findings([], truth, start, end, 100)
    assert report["warnings"] == ["truth item(s) before, at-end, later lie outside the window "
                                  "[2024-03-02T06:00:00.000Z, 2024-03-02T07:00:00.000Z) and are not scored"]
    assert [t["id"] for t in report["truth_items"]] == ["overlaps", "in"]
