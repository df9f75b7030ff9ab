"""Detector-state compaction: the state after every window grows the store by tens of KB per
window and stream, yet a replay only needs the state right before where it starts. Keeping one
state every N windows (aligned on the partition start, so compaction is stable when repeated)
plus the newest lets replays start at any kept window; the runner names the nearest one when
asked to start elsewhere."""

from __future__ import annotations

from datetime import datetime, timedelta

from qraft_core.store.base import EventStore, Filter


def compact_detector_state(
    store: EventStore, every: int, interval: timedelta, first_window: datetime,
    before: datetime | None = None,
) -> dict[str, int]:
    """Delete detector states except every `every`-th window and the newest (only windows before
    `before`, when given); returns the windows kept and deleted."""
    if every < 1:
        raise ValueError(f"every: expected at least 1 window (got {every})")
    windows = sorted(store.count("detector_state", group_by="window_start"))
    if not windows:
        return {"kept": 0, "deleted": 0}
    starts = [datetime.fromisoformat(w).replace(tzinfo=first_window.tzinfo) for w in windows]
    newest = max(starts)
    drop = [
        start for start in starts
        if start != newest and (before is None or start < before)
        and ((start - first_window) // interval) % every != 0
    ]
    if drop:
        store.delete("detector_state", [Filter("window_start", "in", drop)])
    return {"kept": len(starts) - len(drop), "deleted": len(drop)}
