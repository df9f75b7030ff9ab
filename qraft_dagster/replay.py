"""Replaying a window range through the partitioned assets, in ranged runs."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from dagster import DagsterInstance, Definitions

from qraft_core.runtime import Runtime
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
