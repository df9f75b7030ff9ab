"""Annotations: verdicts per pattern, per-detector counts and the human ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.annotations import (
    HumanTruth,
    UnknownPattern,
    add_annotation,
    detector_stats,
    human_truth,
)
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows
from qraft_core.store.fake import MemoryStore

T0 = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
DRIFT, ANOMALY, CLUSTER, FREQ = example_patterns()


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.insert("pattern_events", pattern_rows(example_patterns()))
    return store


def test_latest_verdict_counts_per_detector_and_notes_do_not_change_it(store: MemoryStore) -> None:
    add_annotation(store, DRIFT.pattern_id, "false_alarm", "first look", "ana", now=T0)
    add_annotation(
        store, DRIFT.pattern_id, "confirmed", "seen on the chart", "bo", now=T0 + timedelta(hours=1)
    )
    add_annotation(store, DRIFT.pattern_id, "note", "check tomorrow", "bo", now=T0 + timedelta(hours=2))
    add_annotation(store, ANOMALY.pattern_id, "false_alarm", "maintenance", "ana", now=T0)
    add_annotation(store, CLUSTER.pattern_id, "confirmed", "", "ana", now=T0)
    assert detector_stats(store) == {
        "capymoa.ADWIN": {"confirmed": 1, "false_alarm": 0, "notes": 1, "precision": 1.0},
        "capymoa.CluStream": {"confirmed": 1, "false_alarm": 0, "notes": 0, "precision": 1.0},
        "river.ADWIN": {"confirmed": 1, "false_alarm": 0, "notes": 1, "precision": 1.0},
        "river.DenStream": {"confirmed": 1, "false_alarm": 0, "notes": 0, "precision": 1.0},
        "river.HalfSpaceTrees": {"confirmed": 0, "false_alarm": 1, "notes": 0, "precision": 0.0},
    }


def test_human_truth_lists_confirmed_patterns_per_stream(store: MemoryStore) -> None:
    add_annotation(store, CLUSTER.pattern_id, "confirmed", now=T0)
    add_annotation(store, ANOMALY.pattern_id, "confirmed", now=T0)
    add_annotation(store, ANOMALY.pattern_id, "false_alarm", now=T0 + timedelta(minutes=1))
    add_annotation(store, FREQ.pattern_id, "note", "interesting", now=T0)
    assert human_truth(store) == [
        HumanTruth("cluster_change", "binance_spot", CLUSTER.timestamp),
        HumanTruth("cluster_change", "news", CLUSTER.timestamp),
    ]


def test_annotations_are_audited_and_need_a_known_pattern(store: MemoryStore) -> None:
    note = add_annotation(store, FREQ.pattern_id, "note", "etf week", author="", actor="key:ab12")
    assert note.author == "key:ab12"
    audit = store.select("audit_log")
    assert audit["action"].to_list() == ["annotate"] and audit["target"].to_list() == [FREQ.pattern_id]
    with pytest.raises(UnknownPattern, match="no pattern with id 'nope'"):
        add_annotation(store, "nope", "confirmed")
    with pytest.raises(ValueError, match="label must be"):
        add_annotation(store, FREQ.pattern_id, "maybe")  # type: ignore[arg-type]
