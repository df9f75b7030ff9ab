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
)
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
    with pytest.raises(ValueError, match=r"bad.json: not a ground truth file \(KeyError: 'stream'\)"):
        load_truth(tmp_path / "bad.json")


def test_evaluate_store_reads_stored_findings(tmp_path: Path) -> None:
    report = evaluate_store(MemoryStore(), write_truth(tmp_path))
    assert report["events"] == 0
    assert report["detectors"]["overall"]["findings"] == 0
    assert report["detectors"]["overall"]["recall"] == 0.0
