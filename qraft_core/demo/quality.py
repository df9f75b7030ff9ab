"""Detection quality on the labelled corpus: the default detectors against a plain River loop.

Both read the same bars. The defaults are scored on the findings a user sees:
their signals merged into pattern events by the pipeline's own code
(`qraft_core.patterns.merge`: cooldown, then grouping by evidence time, window
by window as `materialize_patterns` does), each dated at its earliest evidence;
`compare` also scores the raw signals (dated by `Signal.finding_time`), which
is what the detectors alone do. The River loop is the obvious first try:
per stream, `MinMaxScaler | HalfSpaceTrees` (defaults, seed 42) on the
per-bar mean, an anomaly wherever the score reaches a threshold, and `ADWIN`
(defaults) on the same value for drifts. HalfSpaceTrees has no default
threshold: the loop gets the one of `BASELINE_THRESHOLDS` that maximizes its
own window-based score on the corpus (an advantage the defaults do not get).

Measures (`quality`): the window-based standard score over all streams (any
finding in any window of its stream); precision and recall over labelled
windows (a window is found when a finding lies in it; precision = windows
found / findings); false alarms of any type per 10,000 bars on the streams
where nothing is planted; and on drift-only streams the share of drifts found
by a drift finding within 200 bars, and findings outside every window per
10,000 bars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from river import anomaly, drift, preprocessing

from qraft_core.demo.corpus import Stream
from qraft_core.detectors.base import Signal
from qraft_core.detectors.config import DetectorsConfig, MergeConfig, load_default_detectors
from qraft_core.detectors.runner import active_specs, run_window
from qraft_core.evaluate import Item, window_score
from qraft_core.patterns.merge import EvidenceTimes, lookback_seconds, signal_order, window_findings

BASELINE_THRESHOLDS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
# The pipeline's pattern windows (`materialize_patterns`' default interval, on the minute).
WINDOW = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scored:
    """A candidate finding and the score that ranks it (inf: always kept)."""

    item: Item
    score: float


def detect(corpus: Sequence[Stream], config: DetectorsConfig | None = None) -> tuple[list[Item], list[Item]]:
    """(findings, raw signals) of a detector configuration (default: the packaged defaults) on every
    stream."""
    config = config or load_default_detectors()
    specs = active_specs(config)
    findings: list[Item] = []
    signals: list[Item] = []
    for stream in corpus:
        raised = run_window(specs, {}, stream.bars)
        signals.extend(Item(s.type, s.stream, s.finding_time, s.detector) for s in raised)
        findings.extend(merged(raised, stream.bar_s, config.merge))
    return findings, signals


def merged(signals: Sequence[Signal], bar_s: float, merge: MergeConfig) -> list[Item]:
    """The findings the pipeline reports from one stream's signals, window by window (windows
    without a signal report nothing), each dated at its earliest evidence."""
    evidence = EvidenceTimes(lambda _: bar_s, merge.context_bars)
    lookback = timedelta(seconds=lookback_seconds(merge.tolerance_s, merge.cooldown_s, merge.context_bars * bar_s))
    findings = []
    for start in sorted({s.time - (s.time - EPOCH) % WINDOW for s in signals}):
        seen = [s for s in signals if start - lookback <= s.time < start + WINDOW]
        groups, _ = window_findings(seen, start, merge.tolerance_s, merge.cooldown_s, evidence)
        for group in groups:
            anchor = min(group, key=signal_order)
            findings.append(Item(anchor.type, anchor.stream, min(evidence(s) for s in group), anchor.detector))
    return findings


def river_candidates(corpus: Sequence[Stream]) -> list[Scored]:
    """Every bar's HalfSpaceTrees score (as an anomaly candidate) and every ADWIN drift."""
    candidates = []
    for stream in corpus:
        column = next(c for c in stream.bars.columns if c.endswith("_mean"))
        scaler, trees, adwin = preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42), drift.ADWIN()
        for time, value in stream.bars.select("bar_time", column).iter_rows():
            if value is None or not math.isfinite(value):
                continue
            scaler.learn_one({"x": value})
            unit = scaler.transform_one({"x": value})
            score = trees.score_one(unit)
            trees.learn_one(unit)
            if score >= BASELINE_THRESHOLDS[0]:
                candidates.append(Scored(Item("anomaly", stream.name, time, "river.HalfSpaceTrees"), score))
            adwin.update(value)
            if adwin.drift_detected:
                candidates.append(Scored(Item("concept_drift", stream.name, time, "river.ADWIN"), math.inf))
    return candidates


def above(candidates: Sequence[Scored], threshold: float) -> list[Item]:
    return [c.item for c in candidates if c.score >= threshold]


def _truth(corpus: Sequence[Stream], families: Sequence[str] | None = None) -> list[Item]:
    return [t for s in corpus if families is None or s.family in families for t in s.truth]


def _rows(corpus: Sequence[Stream], family: str) -> int:
    return sum(s.bars.height for s in corpus if s.family == family)


def _inside(item: Item, truth: Sequence[Item]) -> bool:
    return any(t.stream == item.stream and t.start and t.end and t.start <= item.time <= t.end for t in truth)


def precision_recall(findings: Sequence[Item], truth: Sequence[Item]) -> tuple[float, float]:
    """(windows found / findings, windows found / windows), any type."""
    found = sum(1 for t in truth if any(f.stream == t.stream and t.start and t.end and t.start <= f.time <= t.end
                                        for f in findings))
    return (found / len(findings) if findings else 0.0), (found / len(truth) if truth else 0.0)


def quality(corpus: Sequence[Stream], findings: Sequence[Item]) -> dict[str, float]:
    """The measures of the module docstring for one set of findings."""
    truth = _truth(corpus)
    by_family = {s.name: s.family for s in corpus}
    precision, recall = precision_recall(findings, truth)
    nothing = [f for f in findings if by_family[f.stream] == "nothing"]
    on_drift = [f for f in findings if by_family[f.stream] == "drift"]
    drift_truth = _truth(corpus, ["drift"])
    drifts_found = sum(
        1 for t in drift_truth
        if any(f.type == "concept_drift" and f.stream == t.stream and t.start and t.end and t.start <= f.time <= t.end
               for f in on_drift)
    )
    standard = window_score(findings, truth, 0.0, 0.0)["overall"]["standard"]
    return {
        "window_standard_score": float(standard if standard is not None else 0.0),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "false_alarms_per_10k_rows_nothing_planted": round(len(nothing) * 1e4 / max(_rows(corpus, "nothing"), 1), 3),
        "drift_recall_within_200_rows": round(drifts_found / len(drift_truth), 4) if drift_truth else 0.0,
        "false_findings_per_10k_rows_drift_only": round(
            sum(1 for f in on_drift if not _inside(f, drift_truth)) * 1e4 / max(_rows(corpus, "drift"), 1), 3),
        "findings": float(len(findings)),
    }


def best_baseline(corpus: Sequence[Stream], candidates: Sequence[Scored]) -> tuple[float, dict[str, float]]:
    """The River loop's threshold with the best window-based score, and its measures."""
    scored = [(t, quality(corpus, above(candidates, t))) for t in BASELINE_THRESHOLDS]
    return max(scored, key=lambda pair: (pair[1]["window_standard_score"], -pair[0]))


def precision_at_recall(corpus: Sequence[Stream], candidates: Sequence[Scored], recall: float) -> float:
    """The River loop's best precision at any threshold whose recall reaches `recall` (0 if none)."""
    truth = _truth(corpus)
    best = 0.0
    scores = sorted(c.score for c in candidates if math.isfinite(c.score))
    # Every 2% quantile of the scores, besides the fixed grid: fine enough, and fast.
    quantiles = {scores[int(q * (len(scores) - 1) / 50)] for q in range(51)} if scores else set()
    for threshold in sorted(quantiles | set(BASELINE_THRESHOLDS)):
        p, r = precision_recall(above(candidates, threshold), truth)
        if r >= recall:
            best = max(best, p)
    return round(best, 4)


def compare(corpus: Sequence[Stream], config: DetectorsConfig | None = None) -> dict[str, Any]:
    """The defaults' measures on their findings and on their raw signals, the River loop's (at its
    best threshold), and the loop's precision at the recall of the defaults' findings."""
    findings, signals = detect(corpus, config)
    ours = quality(corpus, findings)
    candidates = river_candidates(corpus)
    threshold, river = best_baseline(corpus, candidates)
    return {
        "defaults": ours,
        "signals": quality(corpus, signals),
        "river": river,
        "river_threshold": threshold,
        "river_precision_at_equal_recall": precision_at_recall(corpus, candidates, ours["recall"]),
        "rows": sum(s.bars.height for s in corpus),
    }


def per_stream_kind(corpus: Sequence[Stream], findings: Sequence[Item]) -> dict[str, tuple[int, int, int, int]]:
    """Per `Stream.background` (a scenario's name): (findings outside every labelled window, bars,
    labelled windows found, labelled windows)."""
    counts: dict[str, list[int]] = {}
    for stream in corpus:
        mine = [f for f in findings if f.stream == stream.name]
        tally = counts.setdefault(stream.background, [0, 0, 0, 0])
        tally[0] += sum(1 for f in mine if not _inside(f, stream.truth))
        tally[1] += stream.bars.height
        tally[2] += sum(1 for t in stream.truth if any(_inside(f, [t]) for f in mine))
        tally[3] += len(stream.truth)
    return {kind: (a, b, c, d) for kind, (a, b, c, d) in counts.items()}

