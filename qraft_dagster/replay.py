"""Replaying a window through the partitioned assets, and what it produced."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from dagster import DagsterInstance, Definitions

from qraft_core.clean import rejection_counts
from qraft_core.events import PatternEvent
from qraft_core.patterns.materialize import load_pattern_events
from qraft_core.runtime import Runtime
from qraft_core.store.base import Filter
from qraft_dagster.execute import materialize_windows


def run_replay(
    defs: Definitions,
    instance: DagsterInstance,
    rt: Runtime,
    start: datetime,
    end: datetime,
    on_progress: Callable[[int], None] = lambda windows: None,
) -> dict[str, Any]:
    """Materialize every asset of the pipeline over [start, end) in ranged runs; returns run outcomes."""
    partitions = rt.config.partitions
    step = partitions.interval * partitions.max_windows_per_run
    runs, failed = 0, []
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        result = materialize_windows(defs, instance, cursor, chunk_end, partitions, tags={"qraft/reason": "replay"})
        runs += 1
        if not result.success:
            failed.append(result.run_id)
            break  # later windows depend on this one's detector state
        on_progress(int((chunk_end - cursor) / partitions.interval))
        cursor = chunk_end
    return {"runs": runs, "failed_runs": failed}


def replayed_patterns(rt: Runtime, start: datetime, end: datetime, sources: list[str]) -> list[PatternEvent]:
    patterns = load_pattern_events(rt.store, start, end)
    if sources:
        patterns = [p for p in patterns if any(s.split(":")[0] in sources for s in p.source_streams)]
    return patterns


def window_summary(rt: Runtime, start: datetime, end: datetime, sources: list[str]) -> dict[str, Any]:
    where = [Filter("source", "in", sources)] if sources else []
    with rt.store.session():
        events = rt.store.count("clean_events", start=start, end=end, where=where).get("", 0)
        letters = rt.store.select("dead_letters", start=start, end=end, where=where, columns=["reason"])
    by_type: dict[str, int] = {}
    for pattern in replayed_patterns(rt, start, end, sources):
        by_type[pattern.type.value] = by_type.get(pattern.type.value, 0) + 1
    return {
        "partitions": int((end - start) / rt.config.partitions.interval),
        "events": events,
        "dead_letters": letters.height,
        # Why events were rejected: a window of rejects is told apart from a window without data.
        "dead_letters_by_reason": rejection_counts(letters),
        "pattern_events": sum(by_type.values()),
        "pattern_events_by_type": by_type,
        "no_data": events == 0,
    }

