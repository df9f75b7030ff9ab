"""From raw signals to findings: cooldown, then merging across detectors and engines.

Both steps look only at signals, so they are pure and replay exactly.

>>> from datetime import UTC, datetime, timedelta
>>> from qraft_core.detectors.base import Signal
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> def sig(detector, engine, seconds, confidence):
...     return Signal(detector, engine, "ADWIN", "1", "s", "concept_drift",
...         t0 + timedelta(seconds=seconds), 1.0, confidence, {"x": 1.0}, "a", "b", {})
>>> kept, dropped = apply_cooldown([sig("r", "river", 0, 0.5), sig("r", "river", 30, 0.5)], 60)
>>> len(kept), dict(dropped)
(1, {'r': 1})
>>> [len(g) for g in group_signals([sig("r", "river", 0, 0.5), sig("c", "capymoa", 20, 0.6)], 60)]
[2]
>>> round(combined_confidence([sig("r", "river", 0, 0.5), sig("c", "capymoa", 20, 0.6)]), 2)
0.8
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import timedelta

from qraft_core.detectors.base import Signal


def _key(signal: Signal) -> tuple[str, str, str]:
    return (signal.stream, signal.type, signal.group)


def apply_cooldown(signals: Iterable[Signal], cooldown_s: float) -> tuple[list[Signal], Counter[str]]:
    """Drop a signal when the same detector fired on the same thing less than `cooldown_s` before.

    The comparison is with the previous firing (kept or not), so a lookback of
    `cooldown_s` is all a window needs to decide exactly as a full run would.
    """
    last: dict[tuple[str, str, str, str], Signal] = {}
    kept: list[Signal] = []
    dropped: Counter[str] = Counter()
    cooldown = timedelta(seconds=cooldown_s)
    for signal in sorted(signals, key=_order):
        key = (signal.detector, *_key(signal))
        previous = last.get(key)
        last[key] = signal
        if previous is not None and signal.time - previous.time < cooldown:
            dropped[signal.detector] += 1
            continue
        kept.append(signal)
    return kept, dropped


def group_signals(signals: Iterable[Signal], tolerance_s: float) -> list[list[Signal]]:
    """Signals on the same stream, type and group within `tolerance_s` of the group's first one."""
    tolerance = timedelta(seconds=tolerance_s)
    open_groups: dict[tuple[str, str, str], list[Signal]] = {}
    groups: list[list[Signal]] = []
    for signal in sorted(signals, key=_order):
        key = _key(signal)
        group = open_groups.get(key)
        if group is not None and signal.time - group[0].time <= tolerance:
            group.append(signal)
            continue
        group = open_groups[key] = [signal]
        groups.append(group)
    return groups


def combined_confidence(group: list[Signal]) -> float:
    """Noisy-OR over detectors (each detector's best signal counts once)."""
    best: dict[str, float] = defaultdict(float)
    for signal in group:
        best[signal.detector] = max(best[signal.detector], signal.confidence)
    remaining = 1.0
    for confidence in best.values():
        remaining *= 1.0 - confidence
    return 1.0 - remaining


def combined_contributions(group: list[Signal]) -> dict[str, float]:
    """Each field's share over the group, weighted by each signal's confidence."""
    totals: dict[str, float] = defaultdict(float)
    for signal in group:
        for field, share in signal.fields.items():
            totals[field] += share * max(signal.confidence, 1e-6)
    weight = sum(totals.values()) or 1.0
    return {field: value / weight for field, value in totals.items()}


def _order(signal: Signal) -> tuple[object, ...]:
    return (signal.time, signal.stream, signal.type, signal.group, signal.engine, signal.detector)
