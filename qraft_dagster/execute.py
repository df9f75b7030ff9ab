"""Running the pipeline job in this process, on a persistent Dagster instance.

Used by `qraft demo`, `qraft replay --in-process` and the tests: the same job,
assets and sensor as under the daemon, so the runs show up in the UI afterwards.
Runs requested by the sensor carry its run keys and name, and `catch_up` stores
the sensor's cursor where the daemon reads it: `qraft up` after `qraft demo`
continues where the demo ended instead of computing it again.
"""

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    build_sensor_context,
    partition_loading_context,
)
from dagster._core.definitions.sensor_definition import SensorType
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.workspace.load_target import WorkspaceFileTarget

from qraft_core.config import DagsterConfig, PartitionsConfig
from qraft_core.replays import RUN_FAILURES
from qraft_core.scheduling import read_cursor
from qraft_dagster.instance import write_instance_settings
from qraft_dagster.sensors.windows import PIPELINE_JOB, window_tags

SENSOR_NAME = "qraft_window_sensor"
# The code location `qraft up` serves (`dagster dev -w workspace.yaml`, from the project folder).
# What Dagster names the repository of a code location defined by one `Definitions` object.
SINGLE_REPOSITORY = "__repository__"
# Step-level chatter and Dagster's errors with their stack traces go to the run's event log (the UI),
# not the terminal: a failed run is told there in one line (`tell_failure`).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
run_failures = logging.getLogger(RUN_FAILURES)


def failure_line(result: ExecuteInProcessResult) -> str:
    """Why a run failed, in one line: its failing step and the error raised there."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps the step's own error: name that one.
            while error.cls_name.startswith("Dagster") and error.cause is not None:
                error = error.cause
            text = error.message.strip().splitlines()[0] if error.message.strip() else ""
            named, _, reason = text.partition(": ")
            reason = reason if named.endswith(error.cls_name) else text
            return f"run {result.run_id} failed at step {event.step_key}: {error.cls_name}: {reason}"
    for event in result.all_events:
        if event.is_run_failure and event.message:
            return f"run {result.run_id} failed: {event.message.strip().splitlines()[0]}"
    return f"run {result.run_id} failed"


def tell_failure(result: ExecuteInProcessResult) -> ExecuteInProcessResult:
    if not result.success:
        run_failures.error(failure_line(result))
    return result


def ensure_dagster_home(dagster_home: Path, settings: DagsterConfig | None = None) -> Path:
    """The Dagster home under the data directory, with dagster.yaml written from Qraft's settings."""
    write_instance_settings(dagster_home, settings or DagsterConfig())
    return dagster_home


def create_instance_storage(dagster_home: Path) -> None:
    """Create the instance's storages (their files and schema) here, once, before the processes that
    share them start: two processes creating them at once can stamp the schema twice, and every
    later reader then fails ("more than one head present")."""
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_run_records(limit=1)
        instance.all_instigator_state()


def open_instance(dagster_home: Path, settings: DagsterConfig | None = None) -> DagsterInstance:
    """The persistent instance under the data directory (the one `dagster dev` there uses)."""
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(dagster_home, settings))
    return DagsterInstance.get()


def materialize_windows(
    defs: Definitions,
    instance: DagsterInstance,
    start: datetime,
    end: datetime,
    config: PartitionsConfig,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """One run of the pipeline job over the windows [start, end)."""
    selected = window_tags(start, end, config)
    key = selected.pop("dagster/partition", None)
    # Dagster's time partitions end at the current time whatever their configured end: windows of data
    # dated after now (simulated or planned data, a clock running behind) are run as of their end.
    with partition_loading_context(effective_dt=max(end, datetime.now(UTC))):
        return tell_failure(defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
            run_config=QUIET, instance=instance, partition_key=key, tags={**selected, **(tags or {})},
            raise_on_error=False,
        ))


def execute_request(defs: Definitions, instance: DagsterInstance, request: RunRequest) -> ExecuteInProcessResult:
    """Run what the sensor requested, tagged as the daemon tags its runs (run key, sensor name)."""
    tags = dict(request.tags)
    if request.run_key:
        tags |= {RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: SENSOR_NAME}
    return tell_failure(defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
        run_config=QUIET, instance=instance, partition_key=request.partition_key, tags=tags,
        raise_on_error=False,
    ))


def drain_sensor(
    defs: Definitions,
    instance: DagsterInstance,
    cursor: str | None = None,
    on_run: Callable[[RunRequest, ExecuteInProcessResult], None] | None = None,
    max_ticks: int = 1000,
) -> str | None:
    """Evaluate the window sensor and execute what it requests until it requests nothing."""
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    for _ in range(max_ticks):
        context = build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
        result = sensor.evaluate_tick(context)
        cursor = result.cursor
        for event in result.asset_events:  # recorded as the daemon records them (raw_events observations)
            instance.report_runless_asset_event(event)
        if not result.run_requests:
            return cursor
        for request in result.run_requests:
            outcome = execute_request(defs, instance, request)
            if on_run is not None:
                on_run(request, outcome)
    return cursor


def sensor_origins(workspace_file: Path) -> list[RemoteInstigatorOrigin]:
    """The window sensor of each code location the workspace file declares, as the daemon identifies it."""
    return [
        RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, SINGLE_REPOSITORY), SENSOR_NAME)
        for location in WorkspaceFileTarget([str(workspace_file)]).create_origins()
    ]


# The code location `qraft up` serves: the same as the project's workspace.yaml.
CODE_LOCATION = {"load_from": [{"python_module": {"module_name": "qraft_dagster.definitions", "attribute": "defs"}}]}


def workspace_file(dagster_home: Path) -> Path:
    """The workspace file `dagster dev` and its daemon read: the current folder's (the project's, or a
    user's own), else the one `qraft up` writes into the Dagster home when run from another folder."""
    here = Path("workspace.yaml")
    return here if here.is_file() else dagster_home / "workspace.yaml"


def daemon_workspace(instance: DagsterInstance) -> Path:
    """`workspace_file` of the Dagster home of `instance`."""
    return workspace_file(Path(instance.root_directory))


def stored_cursor(instance: DagsterInstance, workspace_file: Path | None = None) -> str | None:
    """The window sensor's cursor as the daemon stored it (None: it never ticked)."""
    workspace_file = workspace_file or daemon_workspace(instance)
    for origin in sensor_origins(workspace_file) if workspace_file.is_file() else []:
        state = instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
        if state is not None and isinstance(state.instigator_data, SensorInstigatorData):
            return state.instigator_data.cursor
    return None


def store_cursor(instance: DagsterInstance, cursor: str | None, workspace_file: Path | None = None) -> int:
    """Store `cursor` as the daemon's window sensor cursor; returns the code locations updated (0 without
    the workspace file: there is no daemon to share with)."""
    workspace_file = workspace_file or daemon_workspace(instance)
    origins = sensor_origins(workspace_file) if workspace_file.is_file() else []
    for origin in origins:
        state = instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
        previous = state.instigator_data if state is not None else None
        data = SensorInstigatorData(
            cursor=cursor, sensor_type=SensorType.STANDARD, last_sensor_start_timestamp=time.time(),
            min_interval=previous.min_interval if isinstance(previous, SensorInstigatorData) else None,
        )
        if state is None:
            instance.add_instigator_state(
                InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE, data))
        else:
            instance.update_instigator_state(state.with_data(data))
    return len(origins)


def catch_up(
    defs: Definitions,
    instance: DagsterInstance,
    on_run: Callable[[RunRequest, ExecuteInProcessResult], None] | None = None,
    workspace_file: Path | None = None,
) -> str | None:
    """`drain_sensor` from the daemon's cursor, then store where it ended for the daemon (the sensor reads a
    damaged stored cursor part by part, `read_cursor`, so a damaged one is replaced by a well-formed one).

    Without a workspace file the Dagster home's is written, as `qraft up` writes it, so `qraft up` after
    `qraft analyze` or `qraft demo` continues where they ended instead of computing every window again.
    """
    workspace_file = workspace_file or daemon_workspace(instance)
    if not workspace_file.is_file():
        workspace_file.parent.mkdir(parents=True, exist_ok=True)
        workspace_file.write_text(yaml.safe_dump(CODE_LOCATION, sort_keys=False))
    cursor = drain_sensor(defs, instance, stored_cursor(instance, workspace_file), on_run)
    store_cursor(instance, cursor, workspace_file)
    return cursor


def cursor_summary(cursor: str | None) -> dict[str, object]:
    """The parts of a stored cursor that are well-formed (`read_cursor`)."""
    return read_cursor(cursor).cursor
