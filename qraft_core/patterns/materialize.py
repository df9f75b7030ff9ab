"""Pattern events: the findings of a window, built from its raw signals.

Per window: the signals raised in it and in the lookback before it (see
`qraft_core.patterns.merge`: tolerance plus the evidence horizon of
`context_bars` bars, at least the cooldown) are read; repeated firings are
dropped (cooldown); the signals raised in the window that point near nothing
already known are grouped by stream, type and evidence time (tolerance), and
each group becomes one `PatternEvent`, dated at the earliest evidence time of
its signals (the estimated change point). A window sees only signals raised
up to its end, so a confirming signal raised in a later window joins nothing:
the later window treats it as part of the finding already reported. Metric
changes are measured on the features of the stream (names and units from the
registered metric sets): the `context_bars` bars before the change point
against the bars after it up to the bar that raised the finding's first signal
at the latest (an anomaly: its own bar; see `build_event`), never more than
`context_bars`. Both spans end at a bar fixed by the signals, never at the
window's end, so a finding has the same metric changes whatever the window
length, and a replay measures exactly what the live run measured.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import polars as pl

from qraft_core.config import config_dir
from qraft_core.detectors.base import Signal
from qraft_core.detectors.config import DetectorsConfig, MergeConfig
from qraft_core.detectors.runner import load_signals
from qraft_core.events import (
    AlgorithmInfo,
    Contributor,
    PatternDetails,
    PatternEvent,
    PatternExplain,
    PatternType,
    iso,
    stable_id,
    utc,
)
from qraft_core.operators.pipeline import PreprocessingConfig, load_preprocessing
from qraft_core.patterns.merge import (
    EvidenceTimes,
    combined_confidence,
    combined_contributions,
    lookback_seconds,
    signal_order,
    window_findings,
)
from qraft_core.patterns.metrics import metrics_for
from qraft_core.store.base import EventStore, Filter, iter_windows
from qraft_core.store.schema import spec

FeatureLoader = Callable[[EventStore, datetime, datetime], pl.DataFrame]

TOP_CONTRIBUTORS = 5


def metric_changes(
    bars: pl.DataFrame, change_point: datetime, after_until: datetime, context_bars: int, bar_seconds: float
) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """Changes of the clean-data metrics at `change_point`, a finding's earliest evidence time.

    Before: the `context_bars` bars before `change_point`. After: the bars from `change_point`
    through `after_until` (a bar the caller fixes from the signals, at most the one that raised
    them), at most `context_bars` of them. No bar after a signal's own is read: a window ending
    right after it, live, has none, and the ones a replay would find could differ with late data.

    Metric names and units come from the registered metric sets (`qraft_core.patterns.metrics`).

    >>> from datetime import UTC
    >>> t0 = datetime(2014, 1, 5, tzinfo=UTC)
    >>> bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=5 * i) for i in range(6)],
    ...     "value_mean": [-1.0, -1.0, -1.0, 0.5, 2.5, 9.0], "value_max": [0.0] * 6})
    >>> changes, units, _ = metric_changes(bars, t0 + timedelta(minutes=15), t0 + timedelta(minutes=20), 3, 300)
    >>> changes, units
    ({'value': 2.5}, {'value': 'delta'})
    """
    span = timedelta(seconds=context_bars * bar_seconds)
    times = pl.col("bar_time")
    before = bars.filter((times >= change_point - span) & (times < change_point))
    after = bars.filter((times >= change_point) & (times <= after_until) & (times < change_point + span))
    changes: dict[str, float] = {}
    units: dict[str, str] = {}
    levels: dict[str, float] = {}
    if before.height == 0 or after.height == 0:
        return changes, units, levels
    for name, (column, unit) in metrics_for(bars.columns).items():
        if column not in bars.columns:
            continue
        mean_before, mean_after = before[column].mean(), after[column].mean()
        if not isinstance(mean_before, float) or not isinstance(mean_after, float):
            continue
        if unit == "pp":
            change = (mean_after - mean_before) * 100
        elif unit == "delta":
            change = mean_after - mean_before
        elif mean_before != 0:
            change = mean_after / mean_before - 1.0
        else:
            continue
        if math.isfinite(change):
            changes[name] = round(change, 2 if unit == "pp" else 6) if unit != "delta" else _significant(change)
            units[name] = unit
            levels[f"{name}_before"] = round(mean_before, 10)
            levels[f"{name}_after"] = round(mean_after, 10)
    return changes, units, levels


def _significant(value: float, digits: int = 6) -> float:
    """`value` to `digits` significant digits (a delta's scale is the field's own)."""
    return float(f"{value:.{digits}g}")


def build_event(group: list[Signal], window_start: datetime, bars: pl.DataFrame, merge: MergeConfig,
                evidence: EvidenceTimes) -> PatternEvent:
    """One PatternEvent from a group of signals on one stream, type and evidence time."""
    # The first signal raised names the finding; the earliest evidence dates it.
    anchor = min(group, key=signal_order)
    top = max(group, key=lambda s: (s.confidence, s.score, s.detector))
    detectors = sorted({s.detector for s in group})
    engines = sorted({s.engine for s in group})
    change_point = min(evidence(s) for s in group)
    # An anomaly is measured on its own bar (the bars after it are the return to normal); any other
    # change on the bars from its change point through the bar that raised its first signal. The
    # first signal raised is the same whatever the window, so are these bars.
    after_until = change_point if anchor.type == PatternType.anomaly else anchor.time
    changes, units, levels = metric_changes(bars, change_point, after_until, merge.context_bars,
                                            evidence.bar_seconds(anchor.stream))
    algorithms: dict[str, AlgorithmInfo] = {}
    for signal in sorted(group, key=lambda s: s.detector):
        algorithms.setdefault(signal.detector, _algorithm(signal))
    contributions = combined_contributions(group)
    ranked = sorted(contributions.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONTRIBUTORS]
    details = PatternDetails.model_validate(
        {
            "prev_state": top.prev_state,
            "new_state": top.new_state,
            "metric_changes": changes,
            "metric_units": units,
            "metrics": {"score": top.score, "signals": float(len(group)), **top.extra, **levels},
            "detectors": detectors,
            "engines": engines,
            "change_point": iso(change_point),
            "first_signal": iso(anchor.time),
            **({"itemset": anchor.group.split("+")} if anchor.group else {}),
        }
    )
    return PatternEvent(
        pattern_id=stable_id("pattern", anchor.type, anchor.stream, iso(anchor.time), anchor.group),
        type=PatternType(anchor.type),
        timestamp=change_point,
        window_start=window_start,
        source_streams=[anchor.stream],
        details=details,
        explain=PatternExplain(top_contributors=[Contributor(field=f, score=round(s, 6)) for f, s in ranked]),
        algorithm=algorithms[top.detector],
        algorithms=list(algorithms.values()),
        cross_validated=len(engines) > 1,
        confidence=round(combined_confidence(group), 6),
    )


def _algorithm(signal: Signal) -> AlgorithmInfo:
    return AlgorithmInfo(
        name=signal.algorithm, version=signal.version, params={"detector": signal.detector, **signal.params}
    )


def _default_loader(store: EventStore, start: datetime, end: datetime) -> pl.DataFrame:
    from qraft_core.features import load_features

    return load_features(store, start, end)


def materialize_patterns(
    store: EventStore,
    config: DetectorsConfig,
    start: datetime,
    end: datetime,
    interval: timedelta = timedelta(minutes=1),
    load_features: FeatureLoader | None = None,
    restart: bool = False,
    preprocessing: PreprocessingConfig | None = None,
) -> dict[str, Any]:
    """Pattern events for every window of [start, end), each window replaced as a whole.

    `restart`: the windows are re-run after a failure (detector state rebuilt); every
    event is marked so. Bar sizes per stream come from `preprocessing` (default:
    preprocessing.yaml of the configuration folder), where the bars were declared.

    Returns {"pattern_events", "by_type", "cross_validated", "suppressed" (signals
    dropped by the cooldown, per detector), "top"} (top: the five findings of
    highest confidence, short).
    """
    merge = config.merge
    start, end = utc(start), utc(end)
    preprocessing = preprocessing or load_preprocessing(config_dir())
    longest_bar = max(
        [preprocessing.bar_seconds, *(preprocessing.bar_seconds_of(p) for p in preprocessing.pipeline_by_source)]
    )
    bar = timedelta(seconds=longest_bar)
    # Asked once per signal and finding: remembered per stream.
    evidence = EvidenceTimes(cache(preprocessing.bar_seconds_for_stream), merge.context_bars)
    lookback = timedelta(seconds=lookback_seconds(merge.tolerance_s, merge.cooldown_s,
                                                  merge.context_bars * longest_bar))
    load = load_features or _default_loader
    events: list[PatternEvent] = []
    suppressed: Counter[str] = Counter()
    with store.session():
        signals = load_signals(store, start - lookback - interval, end)
        # A finding points at most `context_bars` bars before its window; its metric changes
        # read `context_bars` bars before that.
        features = load(store, start - 2 * merge.context_bars * bar, end)
        by_stream = {
            str(key[0]): frame for key, frame in features.partition_by("stream", as_dict=True).items()
        } if features.height else {}
        for window_start, window_end in iter_windows(start, end, interval):
            seen = [s for s in signals if window_start - lookback <= s.time < window_end]
            groups, dropped = window_findings(seen, window_start, merge.tolerance_s, merge.cooldown_s, evidence)
            suppressed.update(dropped)
            window_events = [
                build_event(group, window_start, by_stream.get(group[0].stream, _EMPTY), merge, evidence)
                for group in groups
            ]
            if restart:
                window_events = [event.model_copy(update={"restart": True}) for event in window_events]
            events.extend(window_events)
        # One replace for the range: the same rows as window by window, one round trip.
        store.replace_window("pattern_events", start, end, pattern_rows(events))
    by_type = Counter(event.type.value for event in events)
    top = sorted(events, key=lambda e: (-e.confidence, e.timestamp, e.pattern_id))[:5]
    return {
        "pattern_events": len(events),
        "by_type": {t.value: by_type.get(t.value, 0) for t in PatternType},
        "cross_validated": sum(1 for e in events if e.cross_validated),
        "suppressed": dict(sorted(suppressed.items())),
        "top": [summary(e) for e in top],
    }


def summary(event: PatternEvent) -> dict[str, Any]:
    return {
        "pattern_id": event.pattern_id,
        "type": event.type.value,
        "stream": ",".join(event.source_streams),
        "time": iso(event.timestamp),
        "confidence": event.confidence,
        "cross_validated": event.cross_validated,
        "algorithms": [a.name for a in event.algorithms],
    }


def pattern_rows(events: list[PatternEvent]) -> pl.DataFrame:
    rows = [
        {
            "pattern_id": e.pattern_id,
            "type": e.type.value,
            "timestamp": e.timestamp,
            "window_start": e.window_start,
            "source_streams": e.source_streams,
            "confidence": e.confidence,
            "cross_validated": int(e.cross_validated),
            "algorithm": e.algorithm.name,
            "algorithm_version": e.algorithm.version,
            "restart": int(e.restart),
            "body": e.model_dump_json(),
        }
        for e in events
    ]
    return pl.DataFrame(rows, schema=_PATTERN_SCHEMA)


def load_pattern_events(
    store: EventStore,
    start: datetime | None = None,
    end: datetime | None = None,
    type: str | None = None,
    stream: str | None = None,
    min_confidence: float | None = None,
) -> list[PatternEvent]:
    """Stored pattern events of windows in [start, end), in time order, optionally filtered."""
    where = []
    if type is not None:
        where.append(Filter("type", "=", type))
    if stream is not None:
        where.append(Filter("source_streams", "has", stream))
    if min_confidence is not None:
        where.append(Filter("confidence", ">=", min_confidence))
    rows = store.select("pattern_events", start=start, end=end, where=where, columns=["body"])
    events = [PatternEvent.model_validate(json.loads(body)) for body in rows["body"].to_list()]
    return sorted(events, key=lambda e: (e.timestamp, e.type.value, e.pattern_id))


_TS = pl.Datetime("ms", "UTC")
_EMPTY = pl.DataFrame(schema={"bar_time": _TS})
_PATTERN_SCHEMA = spec("pattern_events").frame_schema
