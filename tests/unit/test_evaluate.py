"""Scoring findings against ground truth on a hand-made case with known answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qraft_core.evaluate import (
    Item,
    evaluate_findings,
    evaluate_store,
    load_truth,
    match,
    periodic_baseline,
    score,
    window_score,
)
from qraft_core.explain.catalog import QueryError
from qraft_core.store.fake import MemoryStore

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def at(kind: str, stream: str, seconds: float, ident: str = "") -> Item:
    return Item(kind, stream, T0 + timedelta(seconds=seconds), ident)


TRUTH = [at("anomaly", "s1", 0, "a0"), at("anomaly", "s1", 600, "a1"), at("anomaly", "s1", 1200, "a2"),
         at("concept_drift", "s1", 300, "d0")]
FOUND = [at("anomaly", "s1", 10), at("anomaly", "s1", 590), at("anomaly", "s1", 1500), at("anomaly", "s2", 0),
         at("concept_drift", "s1", 400)]


def test_known_precision_recall_and_delays() -> None:
    report = score(FOUND, TRUTH, tolerance_s=180, early_s=20, n_events=20_000)
    assert report["anomaly"] == {
        "truth": 3, "findings": 4, "true_positives": 2, "precision": 0.5, "recall": 0.6667,
        "delay_mean_s": 5.0, "delay_p95_s": 9.5, "false_alarms": 2, "false_alarms_per_10k_events": 1.0,
    }
    assert report["concept_drift"]["precision"] == 1.0
    assert report["concept_drift"]["delay_mean_s"] == 100.0
    overall = report["overall"]
    assert (overall["precision"], overall["recall"], overall["delay_mean_s"], overall["delay_p95_s"]) == (
        0.6, 0.75, 36.667, 91.0)
    assert list(report) == ["concept_drift", "anomaly", "overall"]


def test_each_truth_item_matches_once_and_only_same_type_and_stream() -> None:
    pairs = match([at("anomaly", "s1", 5), at("anomaly", "s1", 6), at("concept_drift", "s1", 5)],
                  [at("anomaly", "s1", 0, "a")], tolerance_s=180)
    assert [t.id if t else None for _, t in pairs] == ["a", None, None]
    assert match([at("anomaly", "s1", -21)], [at("anomaly", "s1", 0, "a")], 180, early_s=20)[0][1] is None
    assert match([at("anomaly", "s1", 181)], [at("anomaly", "s1", 0, "a")], 180)[0][1] is None


def test_periodic_baseline_spends_the_same_alarms_evenly() -> None:
    alarms = periodic_baseline(FOUND, TRUTH, T0, T0 + timedelta(hours=1))
    assert [(a.type, a.time.minute) for a in alarms] == [
        ("anomaly", 10), ("anomaly", 30), ("anomaly", 50), ("concept_drift", 30)]
    report = score(alarms, TRUTH, 180, n_events=20_000)
    assert (report["anomaly"]["precision"], report["anomaly"]["recall"]) == (0.3333, 0.3333)
    assert report["concept_drift"]["recall"] == 0.0


def test_no_findings_gives_undefined_precision_not_a_crash() -> None:
    report = score([], TRUTH, 180)
    assert report["anomaly"]["precision"] is None
    assert report["anomaly"]["recall"] == 0.0
    assert report["anomaly"]["false_alarms_per_10k_events"] is None


def write_truth(tmp_path: Path) -> Path:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({
        "version": 1, "window": {"start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T01:00:00.000Z"},
        "tolerance_s": 180,
        "patterns": [{"id": t.id, "type": t.type, "stream": t.stream, "time": t.time.isoformat(),
                      "description": "", "details": {}} for t in TRUTH],
    }))
    return path


def test_truth_file_and_full_report(tmp_path: Path) -> None:
    truth = load_truth(write_truth(tmp_path))
    assert truth.tolerance_s == 180 and truth.start == T0 and truth.end == T0 + timedelta(hours=1)
    report = evaluate_findings(FOUND, truth, T0, T0 + timedelta(hours=1), 20_000)
    assert report["detectors"]["overall"]["true_positives"] == 3
    assert report["baseline"]["overall"]["true_positives"] == 1
    assert report["window"] == {"start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T01:00:00.000Z"}


def test_bad_truth_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ground truth file not found"):
        load_truth(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"patterns": [{"type": "anomaly"}]}')
    with pytest.raises(ValueError, match=r"bad.json: patterns\[0\].stream: missing \(expected a stream name"):
        load_truth(tmp_path / "bad.json")


def test_evaluate_store_reads_stored_findings(tmp_path: Path) -> None:
    report = evaluate_store(MemoryStore(), write_truth(tmp_path))
    assert report["events"] == 0
    assert report["detectors"]["overall"]["findings"] == 0
    assert report["detectors"]["overall"]["recall"] == 0.0


def test_window_score_follows_the_benchmark_rules() -> None:
    truth = [at("anomaly", "s1", 0, "a0"), at("anomaly", "s1", 1000, "a1")]  # windows [-20, 180], [980, 1180]
    perfect = window_score([at("anomaly", "s1", -20)] * 1 + [at("anomaly", "s1", 980)], truth, 180, 20)
    nothing = window_score([], truth, 180, 20)
    assert perfect["anomaly"] == {"standard": 100.0, "low_fp": 100.0, "low_fn": 100.0}
    assert nothing["anomaly"] == {"standard": 0.0, "low_fp": 0.0, "low_fn": 0.0}
    early, late = (window_score([at("anomaly", "s1", t)], truth, 180, 20)["anomaly"]["standard"] for t in (10, 170))
    assert early > late > 25.0  # an early finding earns more; one window of two found is about half
    # A false alarm before any window costs A_FP in full: 0.11 of a 2-window span of 3.97 points.
    alarm = window_score([at("anomaly", "s1", -500), at("anomaly", "s1", -20), at("anomaly", "s1", 980)], truth, 180, 20)
    assert alarm["anomaly"]["standard"] == round(100 * (1 - 0.11 / (2 * 0.98661 + 2)), 2)
    assert alarm["anomaly"]["low_fp"] < alarm["anomaly"]["standard"]
    # Extra findings inside a found window count neither way; other types count only "overall".
    again = window_score([at("anomaly", "s1", -20), at("anomaly", "s1", 5), at("anomaly", "s1", 980),
                          at("concept_drift", "s1", 990)], truth, 180, 20)
    assert again["anomaly"]["standard"] == 100.0 and again["overall"]["standard"] == 100.0
    assert again["concept_drift"]["standard"] is None


def test_labelled_windows_in_the_truth_file(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"tolerance_s": 60, "window": {"start": "2026-01-05T00:00:00Z", "end": "2026-01-05T01:00:00Z"},
                                "patterns": [{"id": "w", "type": "anomaly", "stream": "s1",
                                              "window": {"start": "2026-01-05T00:10:00Z", "end": "2026-01-05T00:30:00Z"}},
                                             {"id": "p", "type": "anomaly", "stream": "s1", "time": "2026-01-05T00:50:00Z"}]}))
    truth = load_truth(path)
    assert [(t.id, t.time.minute, t.start and t.start.minute, t.end and t.end.minute) for t in truth.items] == [
        ("w", 10, 10, 30), ("p", 50, None, None)]
    found = [at("anomaly", "s1", 25 * 60, "f1"), at("anomaly", "s1", 40 * 60, "f2"), at("anomaly", "s1", 3000 + 30, "f3")]
    report = evaluate_findings(found, truth, T0, T0 + timedelta(hours=1), 1000)
    assert report["findings"] == [
        {"finding_id": "f1", "type": "anomaly", "stream": "s1", "time": "2026-01-05T00:25:00.000Z",
         "truth_id": "w", "delay_s": 900.0, "false_alarm": False},
        {"finding_id": "f2", "type": "anomaly", "stream": "s1", "time": "2026-01-05T00:40:00.000Z",
         "truth_id": None, "delay_s": None, "false_alarm": True},
        {"finding_id": "f3", "type": "anomaly", "stream": "s1", "time": "2026-01-05T00:50:30.000Z",
         "truth_id": "p", "delay_s": 30.0, "false_alarm": False},
    ]
    assert report["detectors"]["anomaly"]["recall"] == 1.0
    assert set(report["window_score"]) == {"detectors", "baseline"}
    path.write_text(json.dumps({"patterns": [{"type": "anomaly", "stream": "s", "window": {"start": "2026-01-05T00:10:00Z"}}]}))
    with pytest.raises(ValueError, match=r'patterns\[0\].window: needs both "start" and "end"'):
        load_truth(path)


def test_cli_lists_every_finding_and_the_window_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from qraft_cli import main

    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    truth = write_truth(tmp_path)
    human = CliRunner().invoke(main, ["evaluate", "--truth", str(truth)])
    assert human.exit_code == 0, human.output
    assert "window-based score (NAB rules" in human.output and "findings:" in human.output
    as_json = CliRunner().invoke(main, ["evaluate", "--truth", str(truth), "--json"])
    report = json.loads(as_json.stdout)
    assert report["findings"] == [] and report["window_score"]["detectors"]["overall"]["standard"] == 0.0
    missing = CliRunner().invoke(main, ["evaluate", "--truth", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "ground truth file not found" in missing.output
    assert "Traceback" not in missing.output


def test_an_inverted_window_is_refused_as_patterns_export_refuses_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from qraft_cli import main

    with pytest.raises(QueryError, match=r"^end \(2026-01-05T00:00:00.000Z\) must be after start "
                                         r"\(2026-01-05T00:00:01.000Z\)$"):
        evaluate_store(MemoryStore(), write_truth(tmp_path), T0 + timedelta(seconds=1), T0)
    with pytest.raises(QueryError, match="must be after start"):
        evaluate_store(MemoryStore(), write_truth(tmp_path), T0, T0)
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    for command in (["evaluate", "--truth", str(write_truth(tmp_path)), "--start", "2020-01-02", "--end", "2020-01-01"],
                    ["patterns", "export", "--since", "2020-01-02", "--until", "2020-01-01", "--out", str(tmp_path / "p.jsonl")]):
        refused = CliRunner().invoke(main, command)
        assert refused.exit_code == 2 and refused.output.splitlines()[-1] == (
            "Error: end (2020-01-01T00:00:00.000Z) must be after start (2020-01-02T00:00:00.000Z)"), refused.output


def test_every_truth_item_says_which_finding_matched_it_or_that_it_was_missed(tmp_path: Path) -> None:
    truth = load_truth(write_truth(tmp_path))
    found = [at("anomaly", "s1", 10, "f-a0"), at("anomaly", "s1", 590, "f-a1"), at("anomaly", "s2", 0, "f-other"),
             at("concept_drift", "s1", 400, "f-d0")]
    report = evaluate_findings(found, truth, T0, T0 + timedelta(hours=1), 20_000)
    assert [(t["id"], t["finding"], t["delay_s"], t["missed"]) for t in report["truth_items"]] == [
        ("a0", "f-a0", 10.0, False), ("d0", "f-d0", 100.0, False), ("a1", "f-a1", 0.0, False),
        ("a2", None, None, True)]
    assert report["truth_items"][0] == {
        "id": "a0", "type": "anomaly", "stream": "s1", "time": "2026-01-05T00:00:00.000Z", "finding": "f-a0",
        "finding_time": "2026-01-05T00:00:10.000Z", "delay_s": 10.0, "missed": False}
    # The same pairs as the per-finding list: one matching, read from both sides.
    assert sorted((f["finding_id"], f["truth_id"]) for f in report["findings"] if not f["false_alarm"]) == sorted(
        (t["finding"], t["id"]) for t in report["truth_items"] if not t["missed"])
    assert [f["finding_id"] for f in report["findings"] if f["false_alarm"]] == ["f-other"]


def test_cli_names_false_alarms_and_missed_truth_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from qraft_cli import main
    from qraft_core.plugins.markets.examples import example_patterns

    anomaly = next(p for p in example_patterns() if p.type.value == "anomaly")
    stored = [anomaly.model_copy(update={"timestamp": T0 + timedelta(seconds=s), "pattern_id": i, "source_streams": ["s1"]})
              for s, i in ((10, "f-a0"), (900, "f-late"))]
    monkeypatch.setattr("qraft_core.patterns.materialize.load_pattern_events", lambda store, start, end: stored)
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    truth = write_truth(tmp_path)
    human = CliRunner().invoke(main, ["evaluate", "--truth", str(truth)])
    assert human.exit_code == 0, human.output
    finding_lines = human.output.split("findings:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[3:] for line in finding_lines] == [["matches", "a0", "(+10s)", "f-a0"], ["FALSE", "ALARM", "f-late"]]
    truth_lines = human.output.split("truth items:\n")[1].splitlines()
    assert [line.split()[3:] for line in truth_lines] == [
        ["a0", "found", "(+10s)", "by", "f-a0"], ["d0", "MISSED"], ["a1", "MISSED"], ["a2", "MISSED"]]
    report = json.loads(CliRunner().invoke(main, ["evaluate", "--truth", str(truth), "--json"]).output)
    assert [(t["id"], t["finding"], t["missed"]) for t in report["truth_items"]] == [
        ("a0", "f-a0", False), ("d0", None, True), ("a1", None, True), ("a2", None, True)]
    assert [(f["finding_id"], f["false_alarm"]) for f in report["findings"]] == [("f-a0", False), ("f-late", True)]


def test_the_explorer_evaluation_page_reads_the_same_report(tmp_path: Path) -> None:
    from qraft_core.api.explorer.queries import evaluation_view
    from qraft_core.plugins.markets.examples import example_patterns, pattern_rows

    anomaly = next(p for p in example_patterns() if p.type.value == "anomaly")
    # Dated by its change point (20 s before the event's time), as `qraft evaluate` dates it.
    dated = anomaly.model_copy(update={
        "timestamp": T0 + timedelta(seconds=30), "window_start": T0, "pattern_id": "f-a0", "source_streams": ["s1"],
        "details": anomaly.details.model_copy(update={"change_point": "2026-01-05T00:00:10Z"})})
    late = dated.model_copy(update={"timestamp": T0 + timedelta(seconds=900), "pattern_id": "f-late",
                                    "details": anomaly.details})
    store = MemoryStore()
    store.insert("pattern_events", pattern_rows([dated, late]))
    view = evaluation_view(store, write_truth(tmp_path))
    assert view is not None
    assert view["items"] == view["report"]["truth_items"]
    assert [(t["id"], t["finding"], t["delay_s"]) for t in view["items"]] == [
        ("a0", "f-a0", 10.0), ("d0", None, None), ("a1", None, None), ("a2", None, None)]
    assert view["false_alarms"] == [
        {"type": "anomaly", "stream": "s1", "time": "2026-01-05T00:15:00.000Z", "finding": "f-late"}]
    assert evaluation_view(store, tmp_path / "none.json") is None
