"""Scoring findings against known patterns (the demo's ground truth, or human labels).

A finding matches an unmatched truth item of the same type and stream when
`truth.time - early_s <= finding.time <= truth.time + tolerance_s`; each
finding and each truth item matches at most once (earliest first). Per type
the report gives precision, recall, mean and p95 detection delay (early
findings count as delay 0), and false alarms per 10,000 events, beside a
periodic-alarm baseline that spends the same number of alarms per stream and
type evenly over the window.

>>> from datetime import UTC
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> truth = [Item("anomaly", "s", t0), Item("anomaly", "s", t0 + timedelta(minutes=10))]
>>> found = [Item("anomaly", "s", t0 + timedelta(seconds=20)), Item("anomaly", "s", t0 + timedelta(minutes=5))]
>>> row = score(found, truth, tolerance_s=180, early_s=20, n_events=10_000)["anomaly"]
>>> row["precision"], row["recall"], row["delay_mean_s"], row["false_alarms_per_10k_events"]
(0.5, 0.5, 20.0, 1.0)
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

DEFAULT_TRUTH = Path("data/demo/ground_truth.json")
# Two bars: a detector reading a bar may time-stamp a change a little before its labelled onset.
DEFAULT_EARLY_S = 20.0


@dataclass(frozen=True)
class Item:
    """A truth item or a finding: what kind of pattern, on which stream, when."""

    type: str
    stream: str
    time: datetime
    id: str = ""


@dataclass(frozen=True)
class Truth:
    items: list[Item]
    tolerance_s: float
    start: datetime | None
    end: datetime | None


def _parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def load_truth(path: Path) -> Truth:
    """Ground truth in the demo's format: {"version", "window", "tolerance_s", "patterns": [...]}."""
    try:
        data = json.loads(path.read_text())
        window = data.get("window") or {}
        items = [
            Item(p["type"], p["stream"], _parse_time(p["time"]), str(p.get("id", "")))
            for p in data["patterns"]
        ]
        return Truth(
            items=items,
            tolerance_s=float(data.get("tolerance_s", 180)),
            start=_parse_time(window["start"]) if "start" in window else None,
            end=_parse_time(window["end"]) if "end" in window else None,
        )
    except FileNotFoundError:
        raise ValueError(f"{path}: ground truth file not found") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a ground truth file ({type(exc).__name__}: {exc})") from None


def match(
    findings: Iterable[Item], truth: Iterable[Item], tolerance_s: float, early_s: float = DEFAULT_EARLY_S
) -> list[tuple[Item, Item | None]]:
    """Each finding (in time order) with the truth item it matched, or None (a false alarm)."""
    unmatched = sorted(truth, key=lambda t: (t.time, t.stream, t.type, t.id))
    pairs: list[tuple[Item, Item | None]] = []
    for finding in sorted(findings, key=lambda f: (f.time, f.stream, f.type, f.id)):
        hit = next(
            (
                t
                for t in unmatched
                if t.type == finding.type
                and t.stream == finding.stream
                and t.time - timedelta(seconds=early_s) <= finding.time <= t.time + timedelta(seconds=tolerance_s)
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
    return {
        "window": {"start": iso(start), "end": iso(end)},
        "tolerance_s": truth.tolerance_s,
        "early_s": early_s,
        "events": n_events,
        "detectors": score(findings, inside, truth.tolerance_s, early_s, n_events),
        "baseline": score(
            periodic_baseline(findings, inside, start, end), inside, truth.tolerance_s, early_s, n_events
        ),
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
    events = load_pattern_events(store, start, end)
    findings = [Item(e.type.value, stream, e.timestamp, e.pattern_id) for e in events for stream in e.source_streams]
    n_events = store.count("clean_events", start=start, end=end).get("", 0)
    return evaluate_findings(findings, truth, start, end, n_events)
