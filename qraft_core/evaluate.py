"""Scoring findings against known patterns (the demo's ground truth, or human labels).

A truth item is a point in time (matched within `[time - early_s, time +
tolerance_s]`, `early_s` being two bars of its stream's bar size unless the
truth file or `--early-s` says otherwise) or a labelled window (`"window":
{"start", "end"}`, matched anywhere inside). A finding matches an unmatched truth item of the same type
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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from qraft_core.config import read_regular_file
from qraft_core.events import PatternType, iso, utc
from qraft_core.explain.catalog import resolve_range
from qraft_core.store.base import STORE_TIME_RANGE, Filter
from qraft_core.timeutil import parse_iso

DEFAULT_TRUTH = Path("data/demo/ground_truth.json")
TRUTH_VERSION = 1
KNOWN_TYPES = tuple(t.value for t in PatternType)
DEFAULT_TOLERANCE_S = 180.0
# A detector reading a bar may time-stamp a change up to two bars before its labelled onset; without
# the stream's bar size, two of the demo's 10 s bars.
EARLY_BARS = 2
DEFAULT_EARLY_S = 20.0
# What a truth item may hold: `description` and `details` are for people (the demo writes them), not scored.
ITEM_KEYS = ("id", "type", "stream", "time", "window", "description", "details")
WINDOW_KEYS = ("start", "end")
# Allowances beyond a year are typos (1e999 is infinity), and would overflow the dates they move.
MAX_ALLOWANCE_S = 366 * 86400


@dataclass(frozen=True)
class Item:
    """A truth item or a finding: what kind of pattern, on which stream, when.

    A truth item may carry a labelled window (`start`, `end`); without one its
    window is `[time - early_s, time + tolerance_s]`, where its own `early_s`
    (its stream's allowance, see `early_allowances`) wins over the one passed.
    """

    type: str
    stream: str
    time: datetime
    id: str = ""
    start: datetime | None = None
    end: datetime | None = None
    early_s: float | None = None

    def window(self, tolerance_s: float, early_s: float) -> tuple[datetime, datetime]:
        if self.start is not None and self.end is not None:
            return self.start, self.end
        early = self.early_s if self.early_s is not None else early_s
        return self.time - timedelta(seconds=early), self.time + timedelta(seconds=tolerance_s)


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
    early_s: float | None = None  # the file's `early_s`: the same allowance on every stream


def load_truth(path: Path) -> Truth:
    """Ground truth in the demo's format: {"version", "window", "tolerance_s", "early_s", "patterns": [...]}.

    Every field is checked before anything is scored: a ValueError names the file, the key (such as
    `patterns[0].time`) and what was expected.
    """
    try:
        data = json.loads(read_regular_file(path), object_pairs_hook=_JsonObject.of)
    except FileNotFoundError:
        raise ValueError(f"{path}: ground truth file not found") from None
    except OSError as exc:  # unreadable, a folder, a FIFO
        raise ValueError(f"{path}: cannot read the ground truth file ({exc.strerror or exc})") from None
    except ValueError as exc:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not a ground truth file (not JSON: {exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a ground truth file (JSON nested too deeply)") from None
    try:
        return _truth(data)
    except TruthError as exc:
        raise ValueError(f"{path}: {exc}") from None


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers the keys written twice in it (`json` keeps the last silently)."""

    repeated: tuple[str, ...] = ()

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        made = cls(pairs)
        if len(made) < len(pairs):
            made.repeated = tuple(key for key, times in Counter(key for key, _ in pairs).items() if times > 1)
        return made


def _check_keys(value: dict[str, Any], key: str, known: Sequence[str] | None = None) -> None:
    """An object the format reads has each key once and, when `known` is given, only those keys."""
    where = f"{key}." if key else ""
    repeated = getattr(value, "repeated", ())
    if repeated:
        raise TruthError(f"{where}{repeated[0]}", "given twice (only one value can be scored)")
    unknown = next((name for name in value if name not in known), None) if known is not None else None
    if unknown is not None:
        raise TruthError(f"{where}{unknown}", f"an unknown key (expected one of {', '.join(known or ())})")


class TruthError(ValueError):
    """A ground truth field that is missing or not what the format expects: `key: problem`."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def _truth(data: Any) -> Truth:
    if not isinstance(data, dict):
        raise TruthError("(top level)", f'expected an object {{"version", "window", "patterns": [...]}}, '
                                        f"got {_kind(data)}")
    _check_keys(data, "")  # other keys (the demo's `seed`, `malformed`) describe the file
    version = data.get("version", TRUTH_VERSION)
    if isinstance(version, bool) or version != TRUTH_VERSION:
        raise TruthError("version", f"expected {TRUTH_VERSION} (the only version this Qraft reads), got {version!r}")
    if data.get("window") is None:
        start = end = None
    else:
        start, end = _range(data["window"], "window", both=False)
    if "patterns" not in data:
        raise TruthError("patterns", "missing (expected a list of truth items)")
    if not isinstance(data["patterns"], list):
        raise TruthError("patterns", f"expected a list of truth items, got {_kind(data['patterns'])}")
    items = [_truth_item(pattern, f"patterns[{index}]") for index, pattern in enumerate(data["patterns"])]
    given: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.id and item.id in given:
            raise TruthError(f"patterns[{index}].id", f"{item.id!r} is already the id of patterns[{given[item.id]}]")
        given[item.id] = index
    early_s = data.get("early_s")
    return Truth(
        items=items,
        tolerance_s=_seconds(data.get("tolerance_s", DEFAULT_TOLERANCE_S), "tolerance_s"),
        start=start,
        end=end,
        early_s=None if early_s is None else _seconds(early_s, "early_s"),
    )


def _truth_item(pattern: Any, key: str) -> Item:
    """One entry of `patterns`: a point in time, or a labelled window (time defaults to its start)."""
    if not isinstance(pattern, dict):
        raise TruthError(key, f'expected an object {{"id", "type", "stream", "time"}}, got {_kind(pattern)}')
    _check_keys(pattern, key, ITEM_KEYS)
    ident = pattern.get("id", "")
    if not isinstance(ident, str):
        raise TruthError(f"{key}.id", f"expected a string, got {_kind(ident)}")
    if "id" in pattern and not ident.strip():
        raise TruthError(f"{key}.id", f"expected a name, got {ident!r} (leave the id out for none)")
    kind = pattern.get("type")
    if kind not in KNOWN_TYPES:
        raise TruthError(f"{key}.type", _expected(pattern, "type", f"one of {', '.join(KNOWN_TYPES)}"))
    stream = pattern.get("stream")
    if not isinstance(stream, str) or not stream.strip():
        raise TruthError(f"{key}.stream", _expected(pattern, "stream", "a stream name such as binance_spot:BTCUSDT"))
    start = end = None
    if pattern.get("window") is not None:
        start, end = _range(pattern["window"], f"{key}.window", both=True)
    if start is not None and pattern.get("time") is None:
        time = start
    elif "time" in pattern:
        time = _time(pattern["time"], f"{key}.time")
    else:
        raise TruthError(key, 'needs a "time" or a "window" {"start", "end"}')
    # With both, the window is matched and delays count from the time (the onset): it must lie inside.
    if start is not None and end is not None and not start <= time <= end:
        raise TruthError(f"{key}.time", f"{iso(time)} is outside the item's window [{iso(start)}, {iso(end)}] "
                                        "(with a window, the time is the onset delays count from)")
    return Item(kind, stream, time, ident, start, end)


def _range(value: Any, key: str, both: bool) -> tuple[datetime | None, datetime | None]:
    """A window {"start", "end"}: with `both`, each is required; the start no later than the end."""
    if not isinstance(value, dict):
        raise TruthError(key, f'expected an object {{"start", "end"}} of ISO 8601 times, got {_kind(value)}')
    _check_keys(value, key, WINDOW_KEYS)
    if both and not ("start" in value and "end" in value):
        raise TruthError(key, 'needs both "start" and "end" (ISO 8601 times)')
    start = _time(value["start"], f"{key}.start") if "start" in value else None
    end = _time(value["end"], f"{key}.end") if "end" in value else None
    if start is not None and end is not None and end < start:
        raise TruthError(key, f"end ({iso(end)}) is before start ({iso(start)})")
    return start, end


def _time(value: Any, key: str) -> datetime:
    """An ISO 8601 time (no zone means UTC) in the years the store holds."""
    if not isinstance(value, str):
        raise TruthError(key, f"expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got {_kind(value)}")
    try:
        parsed = parse_iso(value)
    except ValueError:
        raise TruthError(key, f"expected an ISO 8601 time such as 2026-01-05T00:25:03Z, got {value!r}") from None
    low, high = STORE_TIME_RANGE
    if not low <= parsed <= high:
        raise TruthError(key, f"{value!r} is outside the years {low.year}-{high.year} the store holds")
    return parsed


def _seconds(value: Any, key: str) -> float:
    """A finite, non-negative number of seconds, at most MAX_ALLOWANCE_S."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TruthError(key, f"expected a number of seconds, got {_kind(value)}")
    if not (math.isfinite(value) and 0 <= value <= MAX_ALLOWANCE_S):
        raise TruthError(key, f"expected a number of seconds from 0 to {MAX_ALLOWANCE_S} (a year), got {value!r}")
    return float(value)


def _expected(pattern: dict[str, Any], key: str, what: str) -> str:
    """What a truth item's key should hold, and what it holds instead."""
    if key not in pattern:
        return f"missing (expected {what})"
    value = pattern[key]
    return f"expected {what}, got {value!r}" if isinstance(value, str) else f"expected {what}, got {_kind(value)}"


def _kind(value: Any) -> str:
    """How a JSON value is named in an error: its kind, and the value when it is short."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    # isinstance, not type(): the objects `load_truth` reads are `_JsonObject`s.
    name = next((name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__)
    return name if isinstance(value, dict | list) or value is None else f"{name} ({json.dumps(value)[:40]})"


def _order(item: Item) -> tuple[datetime, str, str, str]:
    return (item.time, item.stream, item.type, item.id)


def match(
    findings: Iterable[Item], truth: Iterable[Item], tolerance_s: float, early_s: float = DEFAULT_EARLY_S
) -> list[tuple[Item, Item | None]]:
    """Each finding (in time order) with the truth item it matched, or None (a false alarm)."""
    unmatched = sorted(truth, key=_order)
    windows = {id(t): t.window(tolerance_s, early_s) for t in unmatched}  # once, not once per finding
    pairs: list[tuple[Item, Item | None]] = []
    for finding in sorted(findings, key=_order):
        hit = next(
            (
                t
                for t in unmatched
                if t.type == finding.type
                and t.stream == finding.stream
                and windows[id(t)][0] <= finding.time <= windows[id(t)][1]
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


def early_allowances(truth: Truth, early_s: float | None = None,
                     bar_seconds: Callable[[str], float] | None = None) -> dict[str, float]:
    """How long before its labelled time a finding still matches a truth item, per truth stream:
    `early_s` when given (`--early-s`), else the truth file's `early_s`, else two bars of the stream's
    own bar size (`bar_seconds`, from the configuration the data was analysed with), else 20 s.

    >>> truth = Truth([Item("concept_drift", "m", datetime(2024, 3, 2, 6))], 180, None, None)
    >>> early_allowances(truth), early_allowances(truth, bar_seconds=lambda stream: 60)
    ({'m': 20.0}, {'m': 120.0})
    >>> early_allowances(replace(truth, early_s=0.0), bar_seconds=lambda stream: 60)
    {'m': 0.0}
    """
    chosen = early_s if early_s is not None else truth.early_s
    allowances = {}
    for stream in sorted({t.stream for t in truth.items}):
        if chosen is not None:
            allowances[stream] = chosen
        elif bar_seconds is not None:
            allowances[stream] = float(EARLY_BARS * bar_seconds(stream))
        else:
            allowances[stream] = DEFAULT_EARLY_S
    return allowances


def _named(items: Sequence[Item]) -> str:
    """Truth items by id (their time when they have none), the first five."""
    ids = [t.id or iso(t.time) for t in items]
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def unseen_stream_warnings(truth: Sequence[Item], seen: set[str]) -> list[str]:
    """One line per truth stream that has neither events nor findings in the window (a misspelt name
    leaves its items missed, silently otherwise)."""
    return [f"stream {stream!r} of truth item(s) {_named([t for t in truth if t.stream == stream])} has no "
            f"events or findings in the window (streams seen: {', '.join(sorted(seen)[:10]) or 'none'})"
            for stream in sorted({t.stream for t in truth} - seen)]


def in_window(item: Item, start: datetime, end: datetime) -> bool:
    """Whether a truth item is scored in [start, end): its time inside, or its labelled window
    overlapping (a window that began before `start` still counts)."""
    if item.start is not None and item.end is not None:
        return item.start < end and start <= item.end
    return start <= item.time < end


def outside_warnings(truth: Sequence[Item], start: datetime, end: datetime) -> list[str]:
    """A line naming the truth items the window leaves out (a mistyped date or zone would raise the
    recall, silently otherwise)."""
    outside = [t for t in sorted(truth, key=_order) if not in_window(t, start, end)]
    return [f"truth item(s) {_named(outside)} lie outside the window [{iso(start)}, {iso(end)}) and are "
            "not scored"] if outside else []


def evaluate_findings(
    findings: Sequence[Item],
    truth: Truth,
    start: datetime,
    end: datetime,
    n_events: int,
    early_s: float | None = None,
    bar_seconds: Callable[[str], float] | None = None,
    seen_streams: set[str] | None = None,
) -> dict[str, Any]:
    """The full report: detectors and periodic baseline side by side.

    `early_s`, `bar_seconds`: see `early_allowances`; `seen_streams`: the streams with events in the
    window, to warn of truth streams with neither events nor findings (not checked when None).
    """
    allowances = early_allowances(truth, early_s, bar_seconds)
    inside = [replace(t, early_s=allowances[t.stream]) for t in truth.items if in_window(t, start, end)]
    baseline = periodic_baseline(findings, inside, start, end)
    fallback = early_s if early_s is not None else truth.early_s if truth.early_s is not None else DEFAULT_EARLY_S
    distinct = set(allowances.values())
    warnings = outside_warnings(truth.items, start, end) + (
        [] if seen_streams is None else unseen_stream_warnings(inside, seen_streams | {f.stream for f in findings}))
    return {
        "window": {"start": iso(start), "end": iso(end)},
        "tolerance_s": truth.tolerance_s,
        # One allowance for every stream, or None when bar sizes differ (see early_s_by_stream).
        "early_s": distinct.pop() if len(distinct) == 1 else None if distinct else fallback,
        "early_s_by_stream": allowances,
        "events": n_events,
        "warnings": warnings,
        "detectors": score(findings, inside, truth.tolerance_s, fallback, n_events),
        "baseline": score(baseline, inside, truth.tolerance_s, fallback, n_events),
        "window_score": {
            "detectors": window_score(findings, inside, truth.tolerance_s, fallback),
            "baseline": window_score(baseline, inside, truth.tolerance_s, fallback),
        },
        "findings": matches(findings, inside, truth.tolerance_s, fallback),
        "truth_items": truth_outcomes(findings, inside, truth.tolerance_s, fallback),
    }


def evaluate_store(
    store: Any,
    truth_path: Path = DEFAULT_TRUTH,
    start: datetime | None = None,
    end: datetime | None = None,
    early_s: float | None = None,
    bar_seconds: Callable[[str], float] | None = None,
) -> dict[str, Any]:
    """Score the stored pattern events of [start, end) (default: the truth's window); `early_s` and
    `bar_seconds` as `early_allowances` reads them."""
    from qraft_core.patterns.materialize import load_pattern_events

    if early_s is not None and not (math.isfinite(early_s) and 0 <= early_s <= MAX_ALLOWANCE_S):
        raise ValueError(f"--early-s: expected a number of seconds from 0 to {MAX_ALLOWANCE_S} (a year), got {early_s}")
    truth = load_truth(truth_path)
    start = utc(start) if start else truth.start
    end = utc(end) if end else truth.end
    if start is None or end is None:
        raise ValueError(f"{truth_path}: no window in the file: give --start and --end")
    start, end = resolve_range(store, start, end, None)  # refuses an inverted window as `patterns export` does
    events = load_pattern_events(store, start, end)
    n_events = store.count("clean_events", start=start, end=end).get("", 0)
    streams = {t.stream for t in truth.items}
    seen = set(store.count("features", start=start, end=end, where=[Filter("stream", "in", sorted(streams))],
                           group_by="stream")) if streams else set()
    return evaluate_findings(finding_items(events), truth, start, end, n_events, early_s, bar_seconds, seen)


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
