"""Which windows are ready to materialize, decided from what has landed.

A window is closed once the event-time watermark (the newest landed event
time minus the allowed lateness) has passed its end, or once nothing new has
landed for the allowed lateness (the stream went quiet, so waiting longer
would change nothing). Events that land for a window already handed out
reopen it, and every window after it up to the last one handed out, because
the detectors carry state forward in event time; how far back a reopen may
reach is bounded by `max_reopen_windows`. Late events older than that (or
before the first partition) reopen nothing: they are counted as skipped.

One event cannot drag the watermark ahead: it follows landed event times only
in steps of at most `max_reopen_windows` windows (a longer jump would close
windows whose late data could no longer be repaired). Events beyond such a gap
move it only once the gap region keeps receiving events (a stream that
resumed after a pause), or the stream went quiet. With an open partition end
no window past the current time is closed, and one plan hands out at most
`max_runs_per_tick` runs; the next plan continues where it stopped.

The plan is a function of a JSON-able cursor and one observation of the store
(which answers one more question when late events straddle the reach of a
reopen: the earliest of them inside it), so a sensor (or the demo, or a test)
can evaluate it repeatedly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from qraft_core.config import PartitionsConfig
from qraft_core.events import iso
from qraft_core.store.base import EventStore, Filter
from qraft_core.timeutil import parse_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(ts: datetime, interval: timedelta) -> datetime:
    """
    >>> floor_to(datetime(2026, 1, 5, 0, 3, 59, tzinfo=UTC), timedelta(minutes=1)).isoformat()
    '2026-01-05T00:03:00+00:00'
    """
    return EPOCH + ((ts - EPOCH) // interval) * interval


def partition_start(config: PartitionsConfig, now: datetime | None = None) -> datetime:
    """The first window: the configured start, or later when the range would exceed max_partitions.

    The rolling range always holds the window of `now`. When `max_partitions` windows span a day or
    more, its start moves in whole days (the partition set is stable for a day at a time); a shorter
    span starts at the first whole window inside it, so the set moves with every window.

    >>> config = PartitionsConfig(interval_minutes=1, max_partitions=30, start=EPOCH)
    >>> partition_start(config, datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)).isoformat()
    '2026-01-05T11:31:00+00:00'
    >>> partition_start(config.model_copy(update={"max_partitions": 3000}), datetime(2026, 1, 5, 12, tzinfo=UTC)).isoformat()
    '2026-01-04T00:00:00+00:00'
    """
    if config.end is not None:
        return config.start
    now = now or datetime.now(UTC)
    span = config.interval * config.max_partitions
    earliest = now - span
    if span >= timedelta(days=1):
        earliest = earliest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    else:
        earliest = ceil_to(earliest, config.interval)
    return max(config.start, earliest)


def ceil_to(ts: datetime, interval: timedelta) -> datetime:
    floored = floor_to(ts, interval)
    return floored if floored == ts else floored + interval


@dataclass(frozen=True)
class LandingObservation:
    """What landed since the cursor's `landed_seen` mark, and where the watermark may go.

    `reach`: the newest landed event time reachable from the previous watermark in
    steps no longer than the jump bound (None: no bound, use max_event_time).
    `ahead_start`/`ahead_count`: the earliest landed event beyond that reach, and how
    many events lie within one jump bound of it.
    `ask_earliest_from`: asks the store for the earliest new landing at or after a time;
    the plan needs it only when late events straddle the reach of a reopen.
    """

    min_event_time: datetime | None
    max_event_time: datetime | None
    max_landed_at: datetime | None
    reach: datetime | None = None
    ahead_start: datetime | None = None
    ahead_count: int = 0
    ask_earliest_from: Callable[[datetime], datetime | None] | None = field(default=None, compare=False, repr=False)

    def earliest_from(self, start: datetime) -> datetime | None:
        """The earliest event time at or after `start` among the new landings; None when none is."""
        if self.min_event_time is None or self.max_event_time is None or self.max_event_time < start:
            return None
        if self.min_event_time >= start:
            return self.min_event_time
        # Without the store to ask (an observation made by hand), assume one landed right at `start`.
        return start if self.ask_earliest_from is None else self.ask_earliest_from(start)


# Queries per plan while following the watermark; a longer backlog continues in the next plan.
MAX_REACH_STEPS = 50


def jump_bound(config: PartitionsConfig) -> timedelta:
    return config.interval * max(config.max_reopen_windows, 1)


def observe_landing(
    store: EventStore, landed_seen: datetime, watermark: datetime | None = None, bound: timedelta | None = None
) -> LandingObservation:
    """New landings since `landed_seen`; with a `bound`, how far the watermark may follow from `watermark`."""
    newer = [Filter("landed_at", ">", landed_seen)]
    with store.session():
        times = store.extent("raw_events", "timestamp", newer)
        landed = store.extent("raw_events", "landed_at", newer)
        if times is None or landed is None:
            new = LandingObservation(None, None, None)
        else:
            observed = [*newer, Filter("landed_at", "<=", landed[1])]

            def ask_earliest_from(start: datetime) -> datetime | None:
                with store.session():
                    found = store.extent("raw_events", "timestamp", [*observed, Filter("timestamp", ">=", start)])
                return None if found is None else found[0]

            new = LandingObservation(times[0], times[1], landed[1], ask_earliest_from=ask_earliest_from)
        start = watermark or new.min_event_time
        if bound is None or start is None:
            return new
        reach = start
        for _ in range(MAX_REACH_STEPS):
            step = store.extent("raw_events", "timestamp", [Filter("timestamp", ">", reach),
                                                           Filter("timestamp", "<=", reach + bound)])
            if step is None:
                break
            reach = step[1]
        else:  # still catching up: nothing is ahead of a gap yet
            return replace(new, reach=reach)
        ahead = store.extent("raw_events", "timestamp", [Filter("timestamp", ">", reach)])
        if ahead is None:
            return replace(new, reach=reach)
        in_reach = [Filter("timestamp", ">=", ahead[0]), Filter("timestamp", "<", ahead[0] + bound)]
        count = int(store.count("raw_events", where=in_reach).get("", 0))
        return replace(new, reach=reach, ahead_start=ahead[0], ahead_count=count)


@dataclass(frozen=True)
class WindowRequest:
    """Windows [start, end) to materialize in one run, with a deterministic run key."""

    start: datetime
    end: datetime
    reason: str  # "closed", "late" or "retry"
    run_key: str
    # 0 for a first run; n for the n-th re-run after a failure.
    attempt: int = 0
    # The run whose failure this request repairs.
    repairs: str = ""


@dataclass(frozen=True)
class WindowPlan:
    requests: list[WindowRequest]
    cursor: dict[str, Any]
    skipped_late: int  # windows that were too old to reopen


def _parse(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


# The time marks of the window sensor's cursor (`plan_windows`), each an ISO 8601 time or null.
CURSOR_TIMES = ("through", "landed_seen", "max_event_time", "quiet_since")
# The cursor's marks that are window starts or ends, so lie on the window grid inside the partitions.
WINDOW_MARKS = ("through", "heal.from")


@dataclass(frozen=True)
class CursorReading:
    """A well-formed sensor cursor, the parts of the stored one that were dropped, and why."""

    cursor: dict[str, Any]
    dropped: frozenset[str]
    warnings: list[str]


def _time_text(value: Any) -> str | None:
    """`value` as the cursor writes a time, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return iso(parse_iso(value))
    except ValueError:
        return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf")


def read_cursor(text: str | None) -> CursorReading:
    """The window sensor's stored cursor, checked part by part: a malformed part is dropped (one warning
    naming the key and what it should be) and the plan falls back to that part's starting state.

    A dropped time mark is as if no window was handed out yet (`through`; the sensor resumes after the
    newest materialized window when there is one), nothing landed was seen (`landed_seen`,
    `max_event_time`) or the stream just went quiet (`quiet_since`); a dropped `ahead` waits for events
    past a gap again; in `heal`, a dropped `from` is the first partition and a dropped `failures_seen`
    reads every failed run again (their re-runs have the same run keys). Recomputing a window writes the
    same rows, so falling back is safe; it may only redo work. Unknown keys are ignored.

    >>> read_cursor('{"through": 5, "landed_seen": "2026-01-05T10:00:00+01:00"}').cursor
    {'landed_seen': '2026-01-05T09:00:00.000Z', 'heal': {}}
    >>> read_cursor("garbage").warnings
    ["window sensor cursor: expected a JSON object, got 'garbage' (not JSON); starting from an empty cursor"]
    """
    if not text:
        return CursorReading({"heal": {}}, frozenset(), [])
    try:
        stored, got = json.loads(text), repr(text[:40])
    except (ValueError, RecursionError):
        stored, got = None, f"{text[:40]!r} (not JSON)"
    if not isinstance(stored, dict):
        return CursorReading({"heal": {}}, frozenset({*CURSOR_TIMES, "ahead", "heal"}), [
            f"window sensor cursor: expected a JSON object, got {got}; starting from an empty cursor"])
    cursor: dict[str, Any] = {}
    dropped: set[str] = set()
    warnings: list[str] = []

    def drop(key: str, expected: str, value: Any) -> None:
        dropped.add(key)
        warnings.append(f"window sensor cursor: {key!r} expected {expected}, got {json.dumps(value)[:60]}; dropped")

    for key in CURSOR_TIMES:
        value = stored.get(key)
        if value is None:
            continue
        if (time_text := _time_text(value)) is None:
            drop(key, "an ISO 8601 time or null", value)
        else:
            cursor[key] = time_text
    ahead = stored.get("ahead")
    if ahead is not None:
        start = _time_text(ahead.get("start")) if isinstance(ahead, dict) else None
        if start is None or not _is_count(ahead.get("count")):
            drop("ahead", 'an object {"start": ISO 8601 time, "count": whole number}', ahead)
        else:
            cursor["ahead"] = {"start": start, "count": ahead["count"]}
    heal = stored.get("heal", {})
    cursor["heal"] = {}
    if not isinstance(heal, dict):
        drop("heal", "an object", heal)
        heal = {}
    if "from" in heal:
        if (first := _time_text(heal["from"])) is None:
            drop("heal.from", "an ISO 8601 time", heal["from"])
        else:
            cursor["heal"]["from"] = first
    if "failures_seen" in heal:
        if not _is_timestamp(heal["failures_seen"]):
            drop("heal.failures_seen", "a Unix timestamp (a number)", heal["failures_seen"])
        else:
            cursor["heal"]["failures_seen"] = float(heal["failures_seen"])
    return CursorReading(cursor, frozenset(dropped), warnings)


def last_window_end(config: PartitionsConfig, now: datetime) -> datetime:
    """Where the partitions end: the configured end, or (with an open end) the start of the current window."""
    return config.end if config.end is not None else floor_to(now, config.interval)


# How far ahead of the sensor's clock a landing time may lie before it is taken for a clock that ran away.
LANDER_CLOCK_ALLOWANCE = timedelta(days=1)


def bound_cursor(
    reading: CursorReading, now: datetime, config: PartitionsConfig, first_window: datetime, clock_skew: timedelta
) -> CursorReading:
    """`reading` with its time marks held to what the sensor can have written, one warning per change.

    A `through` before the first partition (`partitions.start` moved forward, or a rolling start passed a
    stopped sensor) is raised to it; a window mark off the window grid (`partitions.interval_minutes`
    changed) is floored to it, so the window it cut is handed out again rather than skipped. A time mark
    later than the sensor can have written (past the end of the partitions, or the current time plus
    `clock_skew`: a clock that once ran ahead, a hand edit) would stop the sensor for good; it is dropped,
    as a malformed one is (`read_cursor`). `landed_seen` is stamped by the lander's clock, which may run
    minutes apart from the sensor's on another host: it is dropped only a day ahead
    (`LANDER_CLOCK_ALLOWANCE`), or every tick would read the landings again from the start. The
    watermark `max_event_time` is the data's own (a file may hold events dated ahead of any clock) and
    windows close no later than the current one anyway: it is kept.
    """
    cursor = {**reading.cursor, "heal": dict(reading.cursor["heal"])}
    dropped = set(reading.dropped)
    warnings = list(reading.warnings)
    latest = now + clock_skew
    by_clock = latest, f"the current time plus the allowed clock skew ({clock_skew.total_seconds():.0f} s)"
    # Windows are handed out up to the end of a bounded range, and the watermark may reach it whatever
    # the clock says; with an open end, both follow the clock.
    by_end = by_clock if config.end is None else (config.end, f"the end of the partitions ({iso(config.end)})")
    by_lander = now + max(clock_skew, LANDER_CLOCK_ALLOWANCE), "the current time plus a day (the lander's clock)"
    limits = {"through": by_end, "heal.from": by_end, "landed_seen": by_lander, "quiet_since": by_clock}
    for key, (limit, what) in limits.items():
        part, name = (cursor["heal"], "from") if key == "heal.from" else (cursor, key)
        if (value := cursor_time(part, name)) is None:
            continue
        if value > limit:
            del part[name]
            dropped.add(key)
            warnings.append(f"window sensor cursor: {key!r} {iso(value)} is later than {what}; dropped")
        elif key == "through" and value < first_window:
            part[name] = iso(first_window)
            warnings.append(f"window sensor cursor: {key!r} {iso(value)} is before the first partition "
                            f"({iso(first_window)}); raised to it")
        elif key in WINDOW_MARKS and value != floor_to(value, config.interval):
            part[name] = iso(floor_to(value, config.interval))
            warnings.append(f"window sensor cursor: {key!r} {iso(value)} is off the window grid "
                            f"(partitions.interval_minutes {config.interval_minutes}); floored to {part[name]}")
    return CursorReading(cursor, frozenset(dropped), warnings)


def cursor_time(cursor: dict[str, Any], key: str) -> datetime | None:
    """A time mark of a cursor from `read_cursor`."""
    return _parse(cursor.get(key))


def _chunks(start: datetime, end: datetime, config: PartitionsConfig, reason: str, marker: str) -> list[WindowRequest]:
    step = config.interval * config.max_windows_per_run
    requests = []
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        requests.append(WindowRequest(cursor, chunk_end, reason, f"{reason}:{iso(cursor)}:{iso(chunk_end)}{marker}"))
        cursor = chunk_end
    return requests


def _first_not_waiting(
    start: datetime, end: datetime, interval: timedelta, waiting: Collection[tuple[datetime, datetime]]
) -> datetime:
    """The first window from `start` that no waiting run covers (`end` when they cover all up to it)."""
    window = start
    while window < end and any(first <= window < last for first, last in waiting):
        window += interval
    return window


def plan_windows(
    cursor: dict[str, Any],
    seen: LandingObservation,
    now: datetime,
    config: PartitionsConfig,
    first_window: datetime,
    waiting: Collection[tuple[datetime, datetime]] = (),
) -> WindowPlan:
    """The runs to request now, and the cursor to keep.

    Cursor keys: `through` (end of the last window handed out), `landed_seen`
    (newest landing already considered), `max_event_time` (the watermark before
    lateness), `quiet_since`, and `ahead` (events waiting past a gap) when there are.
    A stored cursor is read through `read_cursor` first: this expects a well-formed one.
    `waiting`: the windows [start, end) of runs requested and not yet started. They read
    what landed when they start, so late events in their windows need no run of their own.
    """
    interval = config.interval
    last_end = last_window_end(config, now)
    pinned = _parse(cursor.get("through"))
    if pinned is None:
        # Start where the data starts, not at the first partition of a long range.
        starts_at = seen.min_event_time or first_window
        through = max(first_window, floor_to(starts_at, interval))
    else:
        # On the grid inside the partitions, so no request starts outside them (`bound_cursor` says why).
        through = max(first_window, min(floor_to(pinned, interval), last_end))
    landed_seen = _parse(cursor.get("landed_seen")) or EPOCH
    max_event_time = _parse(cursor.get("max_event_time"))
    quiet_since = _parse(cursor.get("quiet_since")) or now
    ahead = cursor.get("ahead")
    requests: list[WindowRequest] = []
    skipped = 0

    if seen.max_landed_at is not None:
        assert seen.min_event_time is not None and seen.max_event_time is not None
        quiet_since = now
        landed_seen = max(landed_seen, seen.max_landed_at)
        if seen.reach is None:
            max_event_time = max(filter(None, (max_event_time, seen.max_event_time)))
        if seen.min_event_time < through:
            # Only windows in reach that received late events reopen (with every window after them);
            # late events older than the reach, or before the first partition, reopen nothing.
            earliest = max(through - interval * config.max_reopen_windows, first_window)
            oldest_late = floor_to(seen.min_event_time, interval)
            skipped = max(0, int((earliest - oldest_late) / interval))
            first_late = seen.earliest_from(earliest)
            if first_late is not None:
                reopen_from = _first_not_waiting(floor_to(first_late, interval), through, interval, waiting)
                requests += _chunks(reopen_from, through, config, "late", f":{iso(seen.max_landed_at)}")
    if seen.reach is not None:
        max_event_time = max(filter(None, (max_event_time, seen.reach)))
    quiet = (now - quiet_since).total_seconds() >= config.allowed_lateness_s

    if seen.ahead_start is not None:
        # Events past a gap: believed once more of them arrive there, or once the stream is quiet.
        grew = ahead is not None and ahead["start"] == iso(seen.ahead_start) and seen.ahead_count > ahead["count"]
        if grew or quiet:
            max_event_time = max(filter(None, (max_event_time, seen.ahead_start)))
            ahead = None
        else:
            ahead = {"start": iso(seen.ahead_start), "count": seen.ahead_count}
    elif seen.max_landed_at is not None:
        ahead = None

    if max_event_time is not None:
        if quiet:
            closed_end = ceil_to(max_event_time + timedelta(milliseconds=1), interval)
        else:
            closed_end = floor_to(max_event_time - timedelta(seconds=config.allowed_lateness_s), interval)
        closed_end = min(closed_end, last_end)
        runs_left = max(0, config.max_runs_per_tick - len(requests))
        closed_end = min(closed_end, through + interval * config.max_windows_per_run * runs_left)
        if closed_end > through:
            requests += _chunks(through, closed_end, config, "closed", "")
            through = closed_end

    new_cursor: dict[str, Any] = {
        # Before any data there is nothing to pin: the first landing decides where windows start.
        "through": iso(through) if max_event_time is not None or pinned is not None else None,
        "landed_seen": iso(landed_seen),
        "max_event_time": iso(max_event_time) if max_event_time else None,
        "quiet_since": iso(quiet_since),
    }
    if ahead is not None:
        new_cursor["ahead"] = ahead
    return WindowPlan(requests, new_cursor, skipped)


# Re-runs of one failed run's windows before a person has to look (each failure of a re-run counts).
RUN_RETRIES = 3


@dataclass(frozen=True)
class FailedRun:
    """A pipeline run that failed (or died) over the windows [start, end)."""

    run_id: str
    start: datetime
    end: datetime
    attempt: int = 0


def plan_retries(
    failures: list[FailedRun], materialized: Collection[datetime], first_window: datetime, config: PartitionsConfig
) -> tuple[list[WindowRequest], list[FailedRun]]:
    """Re-runs for failed runs, and the failures given up on (after RUN_RETRIES attempts).

    A re-run starts at the first window not materialized: back from the failed run's start
    through any unmaterialized windows before it (a run killed earlier left them without
    detector state), never before `first_window`; it ends where the failed run ended.
    Windows a later run already materialized are skipped at the start.
    """
    interval = config.interval
    requests: list[WindowRequest] = []
    given_up: list[FailedRun] = []
    for failure in failures:
        if failure.attempt >= RUN_RETRIES:
            given_up.append(failure)
            continue
        begin = max(failure.start, first_window)
        while begin > first_window and begin - interval not in materialized:
            begin -= interval
        while begin < failure.end and begin in materialized:
            begin += interval
        if begin >= failure.end:
            continue
        marker = f":{failure.run_id}"
        requests += [replace(r, attempt=failure.attempt + 1, repairs=failure.run_id)
                     for r in _chunks(begin, failure.end, config, "retry", marker)]
    return requests, given_up
