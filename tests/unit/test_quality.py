"""The default detectors against a plain River loop on a small seeded labelled corpus (the CI form
of bench/bench_quality.py)."""

from __future__ import annotations

import pytest

from qraft_core.demo.corpus import FAMILIES, generate_corpus, make_stream, truth_json
from qraft_core.demo.quality import compare, precision_recall
from qraft_core.evaluate import Item


@pytest.fixture(scope="module")
def result() -> dict:
    return compare(generate_corpus(n_streams=12, n_bars=2500, seed=5))


def test_defaults_beat_the_plain_river_loop(result: dict) -> None:
    ours, river = result["defaults"], result["river"]
    assert ours["window_standard_score"] > river["window_standard_score"]
    assert ours["window_standard_score"] > 0.0  # better than never alarming
    assert ours["precision"] > result["river_precision_at_equal_recall"]
    assert ours["false_alarms_per_10k_rows_nothing_planted"] < river["false_alarms_per_10k_rows_nothing_planted"]


def test_the_corpus_is_seeded_and_labelled() -> None:
    again = make_stream(1, FAMILIES[1], 2500, 5)
    first = generate_corpus(n_streams=12, n_bars=2500, seed=5)[1]
    assert again.bars.equals(first.bars) and again.truth == first.truth
    assert first.family == "drift" and {t.type for t in first.truth} == {"concept_drift"}
    labels = truth_json([first])["patterns"]
    assert [p["id"] for p in labels] == [t.id for t in first.truth]
    assert all(p["window"]["start"] < p["time"] < p["window"]["end"] for p in labels)


def test_precision_and_recall_count_windows() -> None:
    window = generate_corpus(n_streams=2, n_bars=1000, seed=1)[1].truth[0]
    inside = Item("anomaly", window.stream, window.time)
    outside = Item("anomaly", window.stream, window.end.replace(year=window.end.year + 1))
    assert precision_recall([inside, inside, outside], [window]) == (1 / 3, 1.0)
    assert precision_recall([], [window]) == (0.0, 0.0)
