"""The window sensor's loop as the Dagster daemon runs it, in one process.

Each tick's cursor is stored before its runs start (the daemon stores the tick,
then launches), and each run executes in this process, so killing the process
kills the run mid-way. `python -m tests.chaos.pipeline_driver CONFIG_DIR DAGSTER_HOME CURSOR_FILE`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import build_sensor_context


def drive(config_dir: Path, dagster_home: Path, cursor_file: Path, max_ticks: int = 1000) -> int:
    """Tick and run until the sensor requests nothing; returns the runs executed."""
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import SENSOR_NAME, execute_request, open_instance

    defs = build_definitions(str(config_dir))
    instance = open_instance(dagster_home)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    runs = 0
    for _ in range(max_ticks):
        cursor = cursor_file.read_text() if cursor_file.exists() else None
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources))
        cursor_file.write_text(tick.cursor or "")
        if not tick.run_requests:
            break
        for request in tick.run_requests:
            execute_request(defs, instance, request)
            runs += 1
    return runs


if __name__ == "__main__":
    drive(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
