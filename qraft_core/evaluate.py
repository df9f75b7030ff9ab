"""Scoring findings against known patterns (the demo's ground truth, or human labels).

A truth item is a point in time (matched within `[time - early_s, time +
tolerance_s]`) or a labelled window (`"window": {"start", "end"}`, matched
anywhere inside). A finding matches an unmatched truth item of the same type
and stream whose window holds it; each finding and each truth item matches at
most once (earliest first). Per type the report gives precision, recall, mean
and p95 detection delay (early findings count as delay 0), and false alarms
per 10,000 events, beside a periodic-alarm baseline that spends the same
number of alarms per stream and type evenly over the window, lists every
finding with the truth item it matched or `null` (a false alarm), and every
truth item with the finding that matched it and its delay, or `missed`.

The window-based score follows the public anomaly benchmarks' rules (NAB):
per window, the first finding inside earns `A_TP * sigma(y)` (y: its position
relative to the window's end, -1 at the start, 0 at the end, so early
findings earn almost the full reward); a window without a finding costs
`A_FN`; a finding outside every window costs `A_FP` (scaled by sigma of its
distance after the previous window, so a finding just after a window costs
little); further findings inside a window count neither way. The raw score is
normalized to 100 for a perfect detector and 0 for one that never fires.
Profiles: standard (A_TP 1, A_FP 0.11, A_FN 1), low_fp (A_FP 0.22), low_fn
(A_FN 2).

>>> from datetime import UTC
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> truth = [Item("anomaly", "s", t0), Item("anomaly", "s", t0 + timedelta(minutes=10))]
>>> found = [Item("anomaly", "s", t0 + timedelta(seconds=20)), Item("anomaly", "s", t0 + timedelta(minutes=5))]
>>> row = score(found, truth, tolerance_s=180, early_s=20, n_events=10_000)["anomaly"]
>>> row["precision"], row["recall"], row["delay_mean_s"], row["false_alarms_per_10k_events"]
(0.5, 0.5, 20.0, 1.0)
>>> window_score(found, truth, tolerance_s=180, early_s=20)["anomaly"]
{'standard': 46.93, 'low_fp': 44.42, 'low_fn': 47.95}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from qraft_core.events import PatternType, iso, utc
from qraft_core.explain.catalog import resolve_range
from qraft_core.timeutil import parse_iso

DEFAULT_TRUTH = Path("data/demo/ground_truth.json")
# Two bars: a detector reading a bar may time-stamp a change a little before its labelled onset.
DEFAULT_EARLY_S = 20.0


@dataclass(frozen=True)
class Item:
    """A truth item or a finding: what kind of pattern, on which stream, when.

    A truth item may carry a labelled window (`start`, `end`); without one its
    window is `[time - early_s, time + tolerance_s]`.
    """

    type: str
    stream: str
    time: datetime
    id: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def window(self, tolerance_s: float, early_s: float) -> tuple[datetime, datetime]:
        if self.start is not None and self.end is not None:
            return self.start, self.end
        return self.time - timedelta(seconds=early_s), self.time + timedelta(seconds=tolerance_s)


# NAB's application profiles: (reward for a true positive, cost of a false positive, cost of a miss).
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "low_fp": (1.0, 0.22, 1.0),
    "low_fn": (1.0, 0.11, 2.0),
}


@dataclass(frozen=True)
class Truth:
    items: list[Item]
    tolerance_s: float
    start: datetime | None
    end: datetime | None


def load_truth(path: Path) -> Truth:
    """Ground truth in the demo's format: {"version", "window", "tolerance_s", "patterns": [...]}."""
    try:
        data = json.loads(path.read_text())
        window = data.get("window") or {}
        items = [_truth_item(p) for p in data["patterns"]]
        return Truth(
            items=items,
            tolerance_s=float(data.get("tolerance_s", 180)),
            start=parse_iso(window["start"]) if "start" in window else None,
            end=parse_iso(window["end"]) if "end" in window else None,
        )
    except FileNotFoundError:
        raise ValueError(f"{path}: ground truth file not found") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a ground truth file ({type(exc).__name__}: {exc})") from None


def _truth_item(pattern: dict[str, Any]) -> Item:
    """One entry of `patterns`: a point in time, or a labelled window (time defaults to its start)."""
    kind, stream = pattern["type"], pattern["stream"]
    window = pattern.get("window") or {}
    start = parse_iso(window["start"]) if "start" in window else None
    end = parse_iso(window["end"]) if "end" in window else None
    if (start is None) != (end is None) or (start is not None and end is not None and end < start):
        raise ValueError(f"pattern {pattern.get('id', '')!r}: window needs a start no later than its end")
    time = parse_iso(pattern["time"]) if "time" in pattern or start is None else start
    return Item(kind, stream, time, str(pattern.get("id", "")), start, end)


def _order(item: Item) -> tuple[datetime, str, str, str]:
    return (item.time, item.stream, item.type, item.id)


def match(
    findings: Iterable[Item], truth: Iterable[Item], tolerance_s: float, early_s: float = DEFAULT_EARLY_S
) -> list[tuple[Item, Item | None]]:
    """Each finding (in time order) with the truth item it matched, or None (a false alarm)."""
    unmatched = sorted(truth, key=_order)
    pairs: list[tuple[Item, Item | None]] = []
    for finding in sorted(findings, key=_order):
        hit = next(
            (
                t
                for t in unmatched
                if t.type == finding.type
                and t.stream == finding.stream
                and t.window(tolerance_s, early_s)[0] <= finding.time <= t.window(tolerance_s, early_s)[1]
            ),
            None,
        )
        if hit is not None:
            unmatched.remove(hit)
        pairs.append((finding, hit))
    return pairs


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    rank = 0.95 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def score(
    findings: Sequence[Item],
    truth: Sequence[Item],
    tolerance_s: float,
    early_s: float = DEFAULT_EARLY_S,
    n_events: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per pattern type (and "overall"): counts, precision, recall, delays, false alarm rate."""
    pairs = match(findings, truth, tolerance_s, early_s)
    types = sorted({i.type for i in truth} | {f.type for f in findings}, key=_type_order)
    report = {}
    for kind in [*types, "overall"]:
        chosen = [(f, t) for f, t in pairs if kind in ("overall", f.type)]
        n_truth = sum(1 for t in truth if kind in ("overall", t.type))
        delays = [max((f.time - t.time).total_seconds(), 0.0) for f, t in chosen if t is not None]
        false_alarms = sum(1 for _, t in chosen if t is None)
        report[kind] = {
            "truth": n_truth,
            "findings": len(chosen),
            "true_positives": len(delays),
            "precision": round(len(delays) / len(chosen), 4) if chosen else None,
            "recall": round(len(delays) / n_truth, 4) if n_truth else None,
            "delay_mean_s": round(sum(delays) / len(delays), 3) if delays else None,
            "delay_p95_s": round(_p95(delays), 3) if delays else None,
            "false_alarms": false_alarms,
            "false_alarms_per_10k_events": round(false_alarms * 10_000 / n_events, 4) if n_events else None,
        }
    return report


def _sigmoid(position: float) -> float:
    """NAB's scaled sigmoid: ~1 at a window's start (-1), 0 at its end (0), towards -1 after it."""
    return 2.0 / (1.0 + math.exp(5.0 * min(position, 20.0))) - 1.0


def _raw_window_score(findings: Sequence[Item], windows: list[tuple[datetime, datetime]],
                      profile: tuple[float, float, float]) -> float:
    """The NAB score of one stream's findings against its windows (see the module docstring)."""
    reward, false_cost, miss_cost = profile
    windows = sorted(windows)
    detected = [False] * len(windows)
    total = 0.0
    for finding in sorted(findings, key=_order):
        inside = next((i for i, (start, end) in enumerate(windows) if start <= finding.time <= end), None)
        if inside is not None:
            if not detected[inside]:
                start, end = windows[inside]
                width = max((end - start).total_seconds(), 1e-9)
                total += reward * _sigmoid((finding.time - end).total_seconds() / width)
                detected[inside] = True
            continue
        before = [(start, end) for start, end in windows if end < finding.time]
        if before:
            start, end = before[-1]
            width = max((end - start).total_seconds(), 1e-9)
            total += false_cost * _sigmoid((finding.time - end).total_seconds() / width)
        else:
            total -= false_cost
    return total - miss_cost * detected.count(False)


def window_score(
    findings: Sequence[Item], truth: Sequence[Item], tolerance_s: float, early_s: float = DEFAULT_EARLY_S
) -> dict[str, dict[str, float | None]]:
    """Normalized window-based scores per profile, per type (findings and windows of that type) and
    "overall" (any finding in any window of its stream, as the benchmarks count). None: no windows."""
    report: dict[str, dict[str, float | None]] = {}
    for kind in [*sorted({t.type for t in truth} | {f.type for f in findings}, key=_type_order), "overall"]:
        chosen = [f for f in findings if kind in ("overall", f.type)]
        labelled = [t for t in truth if kind in ("overall", t.type)]
        streams = sorted({t.stream for t in labelled} | {f.stream for f in chosen})
        row: dict[str, float | None] = {}
        for name, profile in PROFILES.items():
            raw = perfect = null = 0.0
            for stream in streams:
                windows = [t.window(tolerance_s, early_s) for t in labelled if t.stream == stream]
                raw += _raw_window_score([f for f in chosen if f.stream == stream], windows, profile)
                perfect += profile[0] * _sigmoid(-1.0) * len(windows)
                null -= profile[2] * len(windows)
            row[name] = round(100.0 * (raw - null) / (perfect - null), 2) if perfect > null else None
        report[kind] = row
    return report


def matches(findings: Sequence[Item], truth: Sequence[Item], tolerance_s: float,
            early_s: float = DEFAULT_EARLY_S) -> list[dict[str, Any]]:
    """Every finding with the truth item it matched (`truth_id`, delay) or `false_alarm`."""
    return [
        {
            "finding_id": finding.id,
            "type": finding.type,
            "stream": finding.stream,
            "time": iso(finding.time),
            "truth_id": hit.id if hit else None,
            "delay_s": round(max((finding.time - hit.time).total_seconds(), 0.0), 3) if hit else None,
            "false_alarm": hit is None,
        }
        for finding, hit in match(findings, truth, tolerance_s, early_s)
    ]


def truth_outcomes(findings: Sequence[Item], truth: Sequence[Item], tolerance_s: float,
                   early_s: float = DEFAULT_EARLY_S) -> list[dict[str, Any]]:
    """Every truth item (in time order) with the finding that matched it and its delay, or `missed`.

    The same matching as `matches`: a finding and a truth item pair up here exactly when they do there.
    """
    matched = {id(hit): finding for finding, hit in match(findings, truth, tolerance_s, early_s) if hit is not None}
    outcomes = []
    for item in sorted(truth, key=_order):
        finding = matched.get(id(item))
        outcomes.append({
            "id": item.id,
            "type": item.type,
            "stream": item.stream,
            "time": iso(item.time),
            "finding": finding.id if finding else None,
            "finding_time": iso(finding.time) if finding else None,
            "delay_s": round(max((finding.time - item.time).total_seconds(), 0.0), 3) if finding else None,
            "missed": finding is None,
        })
    return outcomes


def periodic_baseline(findings: Sequence[Item], truth: Sequence[Item], start: datetime, end: datetime) -> list[Item]:
    """Alarms at even intervals, as many per (type, stream) of the truth as the detectors raised (at least 1)."""
    span = (end - start).total_seconds()
    alarms: list[Item] = []
    for kind, stream in sorted({(t.type, t.stream) for t in truth}):
        budget = max(1, sum(1 for f in findings if f.type == kind and f.stream == stream))
        alarms.extend(
            Item(kind, stream, start + timedelta(seconds=span * (i + 0.5) / budget), f"periodic-{i}")
            for i in range(budget)
        )
    return alarms


def _type_order(kind: str) -> tuple[int, str]:
    order = [t.value for t in PatternType]
    return (order.index(kind) if kind in order else len(order), kind)


def evaluate_findings(
    findings: Sequence[Item],
    truth: Truth,
    start: datetime,
    end: datetime,
    n_events: int,
    early_s: float = DEFAULT_EARLY_S,
) -> dict[str, Any]:
    """The full report: detectors and periodic baseline side by side."""
    inside = [t for t in truth.items if start <= t.time < end]
    baseline = periodic_baseline(findings, inside, start, end)
    return {
        "window": {"start": iso(start), "end": iso(end)},
        "tolerance_s": truth.tolerance_s,
        "early_s": early_s,
        "events": n_events,
        "detectors": score(findings, inside, truth.tolerance_s, early_s, n_events),
        "baseline": score(baseline, inside, truth.tolerance_s, early_s, n_events),
        "window_score": {
            "detectors": window_score(findings, inside, truth.tolerance_s, early_s),
            "baseline": window_score(baseline, inside, truth.tolerance_s, early_s),
        },
        "findings": matches(findings, inside, truth.tolerance_s, early_s),
        "truth_items": truth_outcomes(findings, inside, truth.tolerance_s, early_s),
    }


def evaluate_store(
    store: Any, truth_path: Path = DEFAULT_TRUTH, start: datetime | None = None, end: datetime | None = None
) -> dict[str, Any]:
    """Score the stored pattern events of [start, end) (default: the truth's window)."""
    from qraft_core.patterns.materialize import load_pattern_events

    truth = load_truth(truth_path)
    start = utc(start) if start else truth.start
    end = utc(end) if end else truth.end
    if start is None or end is None:
        raise ValueError(f"{truth_path}: no window in the file: give --start and --end")
    start, end = resolve_range(store, start, end, None)  # refuses an inverted window as `patterns export` does
    events = load_pattern_events(store, start, end)
    n_events = store.count("clean_events", start=start, end=end).get("", 0)
    return evaluate_findings(finding_items(events), truth, start, end, n_events)


def finding_items(events: Iterable[Any]) -> list[Item]:
    """Pattern events as findings to score: one per stream, at the time the event says the change began."""
    return [Item(e.type.value, stream, finding_time(e), e.pattern_id) for e in events for stream in e.source_streams]


def finding_time(event: Any) -> datetime:
    """When a pattern event happened: its estimated change point when it has an earlier one."""
    change_point = (event.details.model_extra or {}).get("change_point")
    if isinstance(change_point, str):
        try:
            return min(parse_iso(change_point), event.timestamp)
        except ValueError:
            pass
    return utc(event.timestamp)
