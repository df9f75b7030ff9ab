"""From raw signals to findings: cooldown, then merging by the time the evidence points to.

Every step looks only at signals, so it is pure and replays exactly.

A signal is known at `time` (the bar at which its detector became sure) but
points to an earlier moment: its `evidence_time`, the detector's onset or the
change point `lag_bars` before it, at most `horizon_bars` bars back. Two
detectors that see the same change at different bars (a slow and a fast
drift test) agree on that moment, so signals are merged by it, not by when
they were raised.

A window decides on what is known at its end. Its findings are the signals
raised inside it that repeat no earlier firing of their detector (cooldown)
and point within `tolerance_s` of nothing already known, grouped by evidence
time; a signal pointing near something already known confirms a finding an
earlier window reported. The signals a window must see are therefore those
raised since `lookback_seconds` before it, whatever the window's length.

>>> from datetime import UTC, datetime, timedelta
>>> from qraft_core.detectors.base import Signal
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> def sig(detector, engine, seconds, confidence, lag=0):
...     return Signal(detector, engine, "ADWIN", "1", "s", "concept_drift",
...         t0 + timedelta(seconds=seconds), 1.0, confidence, {"x": 1.0}, "a", "b", {}, lag_bars=lag)
>>> kept, dropped = apply_cooldown([sig("r", "river", 0, 0.5), sig("r", "river", 30, 0.5)], 60)
>>> len(kept), dict(dropped)
(1, {'r': 1})
>>> evidence = EvidenceTimes(bar_seconds=lambda stream: 10, horizon_bars=30)
>>> evidence(sig("c", "capymoa", 300, 0.6, lag=16)).strftime("%H:%M:%S")
'00:02:20'
>>> slow_and_fast = [sig("r", "river", 150, 0.5), sig("c", "capymoa", 300, 0.6, lag=16)]
>>> [len(g) for g in group_signals(slow_and_fast, 60, evidence)]
[2]
>>> round(combined_confidence(slow_and_fast), 2)
0.8
>>> window_findings(slow_and_fast, t0 + timedelta(minutes=5), 60, 0, evidence)
([], Counter())
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from qraft_core.detectors.base import Signal


@dataclass(frozen=True)
class EvidenceTimes:
    """A signal's evidence time: its onset or estimated change point, at most `horizon_bars` bars back.

    The horizon bounds how far back a signal can point, hence how far back a
    window has to look for signals that point at the same moment.
    """

    bar_seconds: Callable[[str], float]
    horizon_bars: int

    def __call__(self, signal: Signal) -> datetime:
        bar = timedelta(seconds=self.bar_seconds(signal.stream))
        estimate = min(signal.finding_time, signal.time - signal.lag_bars * bar)
        return max(estimate, signal.time - self.horizon_bars * bar)


def lookback_seconds(tolerance_s: float, cooldown_s: float, horizon_s: float) -> float:
    """How long before a window the signals it must see may have been raised (module docstring).

    A signal known earlier that points within the tolerance of a new one was raised at
    most tolerance + horizon before it; the cooldown compares with the previous firing.
    """
    return max(tolerance_s + horizon_s, cooldown_s)


def _key(signal: Signal) -> tuple[str, str, str]:
    return (signal.stream, signal.type, signal.group)


def signal_order(signal: Signal) -> tuple[object, ...]:
    """The order signals were raised in (ties broken by what they are), which names findings."""
    return (signal.time, signal.stream, signal.type, signal.group, signal.engine, signal.detector)


def apply_cooldown(signals: Iterable[Signal], cooldown_s: float) -> tuple[list[Signal], Counter[str]]:
    """Drop a signal when the same detector fired on the same thing less than `cooldown_s` before.

    The comparison is with the previous firing (kept or not), so a lookback of
    `cooldown_s` is all a window needs to decide exactly as a full run would.
    """
    last: dict[tuple[str, str, str, str], Signal] = {}
    kept: list[Signal] = []
    dropped: Counter[str] = Counter()
    cooldown = timedelta(seconds=cooldown_s)
    for signal in sorted(signals, key=signal_order):
        key = (signal.detector, *_key(signal))
        previous = last.get(key)
        last[key] = signal
        if previous is not None and signal.time - previous.time < cooldown:
            dropped[signal.detector] += 1
            continue
        kept.append(signal)
    return kept, dropped


def group_signals(
    signals: Iterable[Signal], tolerance_s: float, evidence: Callable[[Signal], datetime]
) -> list[list[Signal]]:
    """Signals on the same stream, type and group whose evidence lies within `tolerance_s` of the
    group's earliest; each group in evidence order."""
    tolerance = timedelta(seconds=tolerance_s)
    open_groups: dict[tuple[str, str, str], tuple[datetime, list[Signal]]] = {}
    groups: list[list[Signal]] = []
    for signal in sorted(signals, key=lambda s: (evidence(s), *signal_order(s))):
        key, at = _key(signal), evidence(signal)
        opened = open_groups.get(key)
        if opened is not None and at - opened[0] <= tolerance:
            opened[1].append(signal)
            continue
        group = [signal]
        open_groups[key] = (at, group)
        groups.append(group)
    return groups


def window_findings(
    seen: Iterable[Signal],
    window_start: datetime,
    tolerance_s: float,
    cooldown_s: float,
    evidence: Callable[[Signal], datetime],
) -> tuple[list[list[Signal]], Counter[str]]:
    """The new findings of the window starting at `window_start`, from the signals raised up to its
    end since `lookback_seconds` before it (module docstring), and the window's signals the
    cooldown dropped, per detector."""
    seen = list(seen)
    tolerance = timedelta(seconds=tolerance_s)
    known: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
    for signal in seen:
        if signal.time < window_start:
            known[_key(signal)].append(evidence(signal))
    kept, _ = apply_cooldown(seen, cooldown_s)
    arrived = [signal for signal in kept if signal.time >= window_start]
    fresh = [s for s in arrived if not any(abs(evidence(s) - at) <= tolerance for at in known[_key(s)])]
    dropped = Counter(s.detector for s in seen if s.time >= window_start) - Counter(s.detector for s in arrived)
    return group_signals(fresh, tolerance_s, evidence), dropped


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
