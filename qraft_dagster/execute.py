"""Running the pipeline job in this process, on a persistent Dagster instance.

Used by `qraft demo`, `qraft replay --in-process` and the tests: the same job,
assets and sensor as under the daemon, so the runs show up in the UI afterwards.
"""

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    build_sensor_context,
)

from qraft_core.config import DagsterConfig, PartitionsConfig
from qraft_dagster.instance import write_instance_settings
from qraft_dagster.sensors.windows import PIPELINE_JOB, window_tags

SENSOR_NAME = "qraft_window_sensor"
# Step-level chatter goes to the run's event log (the UI), not the terminal.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home(dagster_home: Path, settings: DagsterConfig | None = None) -> Path:
    """The Dagster home under the data directory, with dagster.yaml written from Qraft's settings."""
    write_instance_settings(dagster_home, settings or DagsterConfig())
    return dagster_home


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
    return defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
        run_config=QUIET, instance=instance, partition_key=key, tags={**selected, **(tags or {})},
        raise_on_error=False,
    )


def execute_request(defs: Definitions, instance: DagsterInstance, request: RunRequest) -> ExecuteInProcessResult:
    return defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
        run_config=QUIET, instance=instance, partition_key=request.partition_key, tags=dict(request.tags),
        raise_on_error=False,
    )


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
        if not result.run_requests:
            return cursor
        for request in result.run_requests:
            outcome = execute_request(defs, instance, request)
            if on_run is not None:
                on_run(request, outcome)
    return cursor


def cursor_summary(cursor: str | None) -> dict[str, object]:
    return json.loads(cursor) if cursor else {}
