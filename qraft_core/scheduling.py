"""Which windows are ready to materialize, decided from what has landed.

A window is closed once the event-time watermark (the newest landed event
time minus the allowed lateness) has passed its end, or once nothing new has
landed for the allowed lateness (the stream went quiet, so waiting longer
would change nothing). Events that land for a window already handed out
reopen it, and every window after it up to the last one handed out, because
the detectors carry state forward in event time; how far back a reopen may
reach is bounded by `max_reopen_windows`.

The plan is a pure function of a JSON-able cursor and one observation of the
store, so a sensor (or the demo, or a test) can evaluate it repeatedly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from qraft_core.config import PartitionsConfig
from qraft_core.events import iso
from qraft_core.store.base import EventStore, Filter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(ts: datetime, interval: timedelta) -> datetime:
    """
    >>> floor_to(datetime(2026, 1, 5, 0, 3, 59, tzinfo=UTC), timedelta(minutes=1)).isoformat()
    '2026-01-05T00:03:00+00:00'
    """
    return EPOCH + ((ts - EPOCH) // interval) * interval


def partition_start(config: PartitionsConfig, now: datetime | None = None) -> datetime:
    """The first window: the configured start, or later when the range would exceed max_partitions."""
    if config.end is not None:
        return config.start
    now = now or datetime.now(UTC)
    earliest = now - config.interval * config.max_partitions
    earliest = earliest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return max(config.start, earliest)


def ceil_to(ts: datetime, interval: timedelta) -> datetime:
    floored = floor_to(ts, interval)
    return floored if floored == ts else floored + interval


@dataclass(frozen=True)
class LandingObservation:
    """What landed since the cursor's `landed_seen` mark."""

    min_event_time: datetime | None
    max_event_time: datetime | None
    max_landed_at: datetime | None


def observe_landing(store: EventStore, landed_seen: datetime) -> LandingObservation:
    newer = [Filter("landed_at", ">", landed_seen)]
    with store.session():
        times = store.extent("raw_events", "timestamp", newer)
        landed = store.extent("raw_events", "landed_at", newer)
    if times is None or landed is None:
        return LandingObservation(None, None, None)
    return LandingObservation(times[0], times[1], landed[1])


@dataclass(frozen=True)
class WindowRequest:
    """Windows [start, end) to materialize in one run, with a deterministic run key."""

    start: datetime
    end: datetime
    reason: str  # "closed" or "late"
    run_key: str


@dataclass(frozen=True)
class WindowPlan:
    requests: list[WindowRequest]
    cursor: dict[str, Any]
    skipped_late: int  # windows that were too old to reopen


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _chunks(start: datetime, end: datetime, config: PartitionsConfig, reason: str, marker: str) -> list[WindowRequest]:
    step = config.interval * config.max_windows_per_run
    requests = []
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        requests.append(WindowRequest(cursor, chunk_end, reason, f"{reason}:{iso(cursor)}:{iso(chunk_end)}{marker}"))
        cursor = chunk_end
    return requests


def plan_windows(
    cursor: dict[str, Any],
    seen: LandingObservation,
    now: datetime,
    config: PartitionsConfig,
    first_window: datetime,
) -> WindowPlan:
    """The runs to request now, and the cursor to keep.

    Cursor keys: `through` (end of the last window handed out), `landed_seen`
    (newest landing already considered), `max_event_time`, `quiet_since`.
    """
    interval = config.interval
    through = _parse(cursor.get("through"))
    if through is None:
        # Start where the data starts, not at the first partition of a long range.
        starts_at = seen.min_event_time or first_window
        through = max(first_window, floor_to(starts_at, interval))
    landed_seen = _parse(cursor.get("landed_seen")) or EPOCH
    max_event_time = _parse(cursor.get("max_event_time"))
    quiet_since = _parse(cursor.get("quiet_since")) or now
    requests: list[WindowRequest] = []
    skipped = 0

    if seen.max_landed_at is not None:
        assert seen.min_event_time is not None and seen.max_event_time is not None
        quiet_since = now
        landed_seen = max(landed_seen, seen.max_landed_at)
        max_event_time = max(filter(None, (max_event_time, seen.max_event_time)))
        if seen.min_event_time < through:
            earliest = through - interval * config.max_reopen_windows
            reopen_from = max(floor_to(seen.min_event_time, interval), earliest, first_window)
            skipped = max(0, int((reopen_from - floor_to(seen.min_event_time, interval)) / interval))
            if reopen_from < through:
                requests += _chunks(reopen_from, through, config, "late", f":{iso(seen.max_landed_at)}")

    if max_event_time is not None:
        quiet = (now - quiet_since).total_seconds() >= config.allowed_lateness_s
        if quiet:
            closed_end = ceil_to(max_event_time + timedelta(milliseconds=1), interval)
        else:
            closed_end = floor_to(max_event_time - timedelta(seconds=config.allowed_lateness_s), interval)
        if config.end is not None:
            closed_end = min(closed_end, config.end)
        if closed_end > through:
            requests += _chunks(through, closed_end, config, "closed", "")
            through = closed_end

    new_cursor = {
        # Before any data there is nothing to pin: the first landing decides where windows start.
        "through": iso(through) if max_event_time is not None else None,
        "landed_seen": iso(landed_seen),
        "max_event_time": iso(max_event_time) if max_event_time else None,
        "quiet_since": iso(quiet_since),
    }
    return WindowPlan(requests, new_cursor, skipped)
