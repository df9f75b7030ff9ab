"""The window sensor: requests runs for windows that closed, received late data, or whose run failed.

The decisions are `qraft_core.scheduling.plan_windows` and `plan_retries`; this
module reads the cursor, observes the store and Dagster's run records, and
turns the plans into run requests. Run keys are derived from the windows (and,
for late data, the landing mark; for a re-run, the failed run), so a request is
never issued twice. A damaged stored cursor is read part by part (`read_cursor`):
what is malformed is dropped with a warning in the tick's log, and a lost
`through` resumes after the newest materialized window. Times the sensor cannot
have written are held to the partitions and the clock (`bound_cursor`), with a
warning too.

Self-healing: a run whose worker process died is marked failed (with the JVM
crash file when there is one); every failed run is re-requested from the first
window not materialized, ahead of the queue, up to RUN_RETRIES times.
"""


import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    PRIORITY_TAG,
)

from qraft_core.bus.embedded import process_alive
from qraft_core.config import PartitionsConfig
from qraft_core.events import iso
from qraft_core.runtime import jvm_crash_file
from qraft_core.scheduling import (
    EPOCH,
    FailedRun,
    WindowRequest,
    bound_cursor,
    cursor_time,
    jump_bound,
    observe_landing,
    plan_retries,
    plan_windows,
    read_cursor,
)
from qraft_dagster.assets.ingest import observe_raw_events
from qraft_dagster.partitions import partition_key, partition_start, window_of
from qraft_dagster.resources import QraftResource

PIPELINE_JOB = "qraft_pipeline"
# The last asset of the pipeline: a window is done once it is materialized.
LAST_ASSET = AssetKey("explanation_cards")
ATTEMPT_TAG = "qraft/attempt"
# Set on runs that re-run windows after a failure; their pattern events carry `restart`.
RESTART_TAG = "qraft/restart"


def window_tags(start: datetime, end: datetime, config: PartitionsConfig) -> dict[str, str]:
    """Run tags selecting the partitions of [start, end) (a single key or a range)."""
    last = end - config.interval
    if last <= start:
        return {PARTITION_NAME_TAG: partition_key(start)}
    return {
        ASSET_PARTITION_RANGE_START_TAG: partition_key(start),
        ASSET_PARTITION_RANGE_END_TAG: partition_key(last),
    }


def run_windows(run: DagsterRun, config: PartitionsConfig) -> tuple[datetime, datetime] | None:
    """The windows [start, end) a run covers, from its tags."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        start = window_of(tags[PARTITION_NAME_TAG])
        return start, start + config.interval
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        return window_of(tags[ASSET_PARTITION_RANGE_START_TAG]), window_of(
            tags[ASSET_PARTITION_RANGE_END_TAG]) + config.interval
    return None


def run_request(request: WindowRequest, config: PartitionsConfig) -> RunRequest:
    tags = {**window_tags(request.start, request.end, config), "qraft/reason": request.reason}
    if request.attempt:
        # Re-runs go ahead of queued later windows: those need the re-run's detector state.
        tags.update({ATTEMPT_TAG: str(request.attempt), RESTART_TAG: request.repairs,
                     PRIORITY_TAG: str(request.attempt)})
    if PARTITION_NAME_TAG in tags:
        return RunRequest(run_key=request.run_key, partition_key=tags.pop(PARTITION_NAME_TAG), tags=tags)
    return RunRequest(run_key=request.run_key, tags=tags)


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started executing the run (it reported RUN_START)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_START):
        if entry.dagster_event is not None and entry.dagster_event.pid:
            return int(entry.dagster_event.pid)
    return None


def fail_dead_runs(instance: DagsterInstance, crash_dir: Any) -> list[str]:
    """Mark started runs whose worker process is gone as failed; returns their ids."""
    failed = []
    for run in instance.get_runs(RunsFilter(job_name=PIPELINE_JOB, statuses=[DagsterRunStatus.STARTED])):
        pid = run_worker_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        crash = jvm_crash_file(crash_dir, pid)
        note = f"; JVM crash file: {crash}" if crash else ""
        instance.report_run_failed(run, f"the run worker (pid {pid}) died before the run finished{note}")
        failed.append(run.run_id)
    return failed


def failed_runs(
    instance: DagsterInstance, config: PartitionsConfig, seen_until: float
) -> tuple[list[FailedRun], float]:
    """Pipeline runs that failed after `seen_until` (an update timestamp), oldest first."""
    records = instance.get_run_records(
        RunsFilter(job_name=PIPELINE_JOB, statuses=[DagsterRunStatus.FAILURE],
                   updated_after=datetime.fromtimestamp(seen_until, UTC)),
        order_by="update_timestamp", ascending=True,
    )
    failures = []
    for record in records:
        seen_until = max(seen_until, record.update_timestamp.timestamp())
        windows = run_windows(record.dagster_run, config)
        if windows is not None:
            attempt = int(record.dagster_run.tags.get(ATTEMPT_TAG, "0"))
            failures.append(FailedRun(record.dagster_run.run_id, *windows, attempt))
    return failures, seen_until


def waiting_windows(instance: DagsterInstance, config: PartitionsConfig) -> list[tuple[datetime, datetime]]:
    """The windows of pipeline runs requested and not yet started: they read what landed when
    they start, so late events in those windows need no run of their own."""
    records = instance.get_run_records(
        RunsFilter(job_name=PIPELINE_JOB, statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]))
    return [windows for record in records if (windows := run_windows(record.dagster_run, config)) is not None]


def build_window_sensor(job: JobDefinition | UnresolvedAssetJobDefinition) -> SensorDefinition:
    @sensor(job=job, minimum_interval_seconds=10, default_status=DefaultSensorStatus.RUNNING)
    def qraft_window_sensor(context: SensorEvaluationContext, qraft: QraftResource) -> SensorResult | SkipReason:
        """Materializes windows once they close; re-runs windows that received late events or whose run failed."""
        rt = qraft.runtime
        partitions = rt.config.partitions
        now = datetime.now(UTC)
        first_window = partition_start(partitions, now)
        reading = bound_cursor(read_cursor(context.cursor), now, partitions, first_window,
                               timedelta(seconds=rt.config.lander.live_max_future_s))
        for warning in reading.warnings:
            context.log.warning(warning)
        cursor = reading.cursor
        heal = cursor.pop("heal")
        if "through" in reading.dropped:
            # Resume after the newest window already done rather than from the start of the data.
            done = context.instance.get_materialized_partitions(LAST_ASSET)
            if done:
                cursor["through"] = iso(max(window_of(key) for key in done) + partitions.interval)
        since = cursor_time(cursor, "landed_seen") or EPOCH
        seen = observe_landing(rt.store, since, cursor_time(cursor, "max_event_time"), jump_bound(partitions))
        waiting = waiting_windows(context.instance, partitions) if seen.max_landed_at is not None else []
        plan = plan_windows(cursor, seen, now, partitions, first_window, waiting)
        if plan.skipped_late:
            context.log.warning(f"{plan.skipped_late} late window(s) older than max_reopen_windows were not reopened")
        requests = plan.requests
        if plan.requests and "from" not in heal:
            heal["from"] = iso(plan.requests[0].start)  # the first window ever handed out
        for run_id in fail_dead_runs(context.instance, rt.crash_dir):
            context.log.error(f"run {run_id} lost its worker process; marked failed")
        failures, heal["failures_seen"] = failed_runs(context.instance, partitions, heal.get("failures_seen", 0.0))
        if failures:
            done = {window_of(key) for key in context.instance.get_materialized_partitions(LAST_ASSET)}
            # The range's start may have moved past the first window ever handed out.
            first = max(cursor_time(heal, "from") or first_window, first_window)
            retries, given_up = plan_retries(failures, done, first, partitions)
            requests = retries + requests
            for failure in given_up:
                context.log.error(f"run {failure.run_id} of [{iso(failure.start)}, {iso(failure.end)}) failed "
                                  f"after {failure.attempt} re-runs; it is not retried again")
        # Ingest shows in the lineage: each landing is recorded on raw_events (counts, lag, dead letters).
        observed = [observe_raw_events(rt.store, since)] if seen.max_landed_at is not None else []
        return SensorResult(
            run_requests=[run_request(r, partitions) for r in requests],
            cursor=json.dumps({**plan.cursor, "heal": heal}, sort_keys=True),
            asset_events=observed,
        )

    return qraft_window_sensor
