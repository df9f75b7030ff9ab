"""Replaying a window range through the partitioned assets, in ranged runs."""

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

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
    """Materialize every asset of the pipeline over [start, end) in ranged runs; returns run outcomes
    and the seconds each detector spent, summed over the successful runs."""
    partitions = rt.config.partitions
    step = partitions.interval * partitions.max_windows_per_run
    runs, failed = 0, []
    detector_seconds: Counter[str] = Counter()
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        result = materialize_windows(defs, instance, cursor, chunk_end, partitions, tags={"qraft/reason": "replay"})
        runs += 1
        if not result.success:
            failed.append(result.run_id)
            break  # later windows depend on this one's detector state
        detector_seconds.update(detections_seconds(result))
        on_progress(int((chunk_end - cursor) / partitions.interval))
        cursor = chunk_end
    return {"runs": runs, "failed_runs": failed,
            "detector_seconds": {name: round(seconds, 6) for name, seconds in detector_seconds.items()}}


def detections_seconds(result: ExecuteInProcessResult) -> dict[str, float]:
    """`detector_seconds` of the run's detections: every partition of a ranged run carries the same
    `run_summary`, so the first one holds the run's totals."""
    for materialization in result.asset_materializations_for_node("detections"):
        entry = materialization.metadata.get("run_summary")
        if entry is not None and isinstance(entry.value, dict):
            return dict(entry.value.get("detector_seconds", {}))
    return {}
