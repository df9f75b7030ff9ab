"""The window sensor: requests runs for windows that closed or received late data.

The decision is `qraft_core.scheduling.plan_windows`; this module only reads the
cursor, observes the store and turns the plan into run requests. Run keys are
derived from the windows (and, for late data, the landing mark), so a request
is never issued twice.
"""


import json
from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from qraft_core.config import PartitionsConfig
from qraft_core.scheduling import EPOCH, WindowRequest, observe_landing, plan_windows
from qraft_dagster.partitions import partition_key, partition_start
from qraft_dagster.resources import QraftResource

PIPELINE_JOB = "qraft_pipeline"


def window_tags(start: datetime, end: datetime, config: PartitionsConfig) -> dict[str, str]:
    """Run tags selecting the partitions of [start, end) (a single key or a range)."""
    last = end - config.interval
    if last <= start:
        return {"dagster/partition": partition_key(start)}
    return {
        ASSET_PARTITION_RANGE_START_TAG: partition_key(start),
        ASSET_PARTITION_RANGE_END_TAG: partition_key(last),
    }


def run_request(request: WindowRequest, config: PartitionsConfig) -> RunRequest:
    tags = {**window_tags(request.start, request.end, config), "qraft/reason": request.reason}
    if "dagster/partition" in tags:
        return RunRequest(run_key=request.run_key, partition_key=tags.pop("dagster/partition"), tags=tags)
    return RunRequest(run_key=request.run_key, tags=tags)


def build_window_sensor(job: JobDefinition | UnresolvedAssetJobDefinition) -> SensorDefinition:
    @sensor(job=job, minimum_interval_seconds=10, default_status=DefaultSensorStatus.RUNNING)
    def qraft_window_sensor(context: SensorEvaluationContext, qraft: QraftResource) -> SensorResult | SkipReason:
        """Materializes windows once they close; re-runs windows that received late events."""
        rt = qraft.runtime
        partitions = rt.config.partitions
        cursor = json.loads(context.cursor) if context.cursor else {}
        landed_seen = cursor.get("landed_seen")
        seen = observe_landing(
            rt.store, datetime.fromisoformat(landed_seen.replace("Z", "+00:00")) if landed_seen else EPOCH
        )
        plan = plan_windows(cursor, seen, datetime.now(UTC), partitions, partition_start(partitions))
        if plan.skipped_late:
            context.log.warning(f"{plan.skipped_late} late window(s) older than max_reopen_windows were not reopened")
        return SensorResult(
            run_requests=[run_request(r, partitions) for r in plan.requests],
            cursor=json.dumps(plan.cursor, sort_keys=True),
        )

    return qraft_window_sensor
