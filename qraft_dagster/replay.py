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
    """Materialize every asset of the pipeline over [start, end) in ranged runs; returns run outcomes,
    and summed over the successful runs the seconds each detector spent, the times each failed on a
    stream's window and the first error of each."""
    partitions = rt.config.partitions
    step = partitions.interval * partitions.max_windows_per_run
    runs, failed = 0, []
    detector_seconds: Counter[str] = Counter()
    detector_failures: Counter[str] = Counter()
    first_failure: dict[str, str] = {}
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        result = materialize_windows(defs, instance, cursor, chunk_end, partitions, tags={"qraft/reason": "replay"})
        runs += 1
        if not result.success:
            failed.append(result.run_id)
            break  # later windows depend on this one's detector state
        summary = detections_summary(result)
        detector_seconds.update(summary.get("detector_seconds", {}))
        detector_failures.update(summary.get("detector_failures", {}))
        for name, error in summary.get("detector_first_failure", {}).items():
            first_failure.setdefault(name, error)
        on_progress(int((chunk_end - cursor) / partitions.interval))
        cursor = chunk_end
    return {"runs": runs, "failed_runs": failed,
            "detector_seconds": {name: round(seconds, 6) for name, seconds in detector_seconds.items()},
            "detector_failures": {name: count for name, count in detector_failures.items() if count},
            "detector_first_failure": first_failure}


def detections_summary(result: ExecuteInProcessResult) -> dict[str, Any]:
    """The runner's metadata of the run's detections: every partition of a ranged run carries the same
    `run_summary`, so the first one holds the run's totals."""
    for materialization in result.asset_materializations_for_node("detections"):
        entry = materialization.metadata.get("run_summary")
        if entry is not None and isinstance(entry.value, dict):
            return dict(entry.value)
    return {}


def detections_seconds(result: ExecuteInProcessResult) -> dict[str, float]:
    """`detector_seconds` of the run's detections."""
    return dict(detections_summary(result).get("detector_seconds", {}))
