"""A backfill launched as the Dagster UI launches it vs `qraft replay --wait`, over the same windows.

Both start from the same raw events (the demo generator's first hour of two seeds, landed
straight into an embedded ClickHouse per path) and materialize the same WINDOWS windows:
- baseline: `qraft replay --wait`'s path (`run_replay` on the persistent instance), timed as
  a command: a fresh process, its imports and the JVM start included;
- value: an asset backfill of the pipeline job's assets over those partitions, submitted as
  the UI's "Materialize → Launch backfill" submits it, executed by a running
  `dagster-daemon` (backfill daemon → queued run coordinator → run worker process), timed
  from submission until its run succeeded.
The window sensor is stopped on the backfill's instance, so only the backfill runs.
Prints one JSON line {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("QRAFT_BENCH_HOURS", "1")  # bench_replay's raw events: one hour is plenty for 10 windows
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import START, day_of_raw_events, write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WINDOWS = int(os.environ.get("QRAFT_BENCH_WINDOWS", "10"))
TIMEOUT_S = 900
REPLAY = """
import sys
from datetime import datetime
from qraft_core.runtime import Runtime
from qraft_dagster.definitions import build_definitions
from qraft_dagster.execute import open_instance
from qraft_dagster.replay import run_replay
rt = Runtime.load(sys.argv[1])
start, end = (datetime.fromisoformat(t) for t in sys.argv[2:4])
outcome = run_replay(build_definitions(sys.argv[1], rt.config), open_instance(rt.config.dagster_home), rt, start, end)
sys.exit(1 if outcome["failed_runs"] else 0)
"""


def replay_seconds(config: Path, start: datetime, end: datetime) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", REPLAY, str(config), start.isoformat(), end.isoformat()],
                   cwd=REPO, env={**os.environ, "QRAFT_CONFIG_DIR": str(config)}, check=True, timeout=TIMEOUT_S)
    return time.perf_counter() - began


def stop_window_sensor(instance) -> None:  # type: ignore[no-untyped-def]
    from dagster._core.definitions.sensor_definition import SensorType
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
    )

    from qraft_dagster.execute import WORKSPACE, sensor_origins

    for origin in sensor_origins(REPO / WORKSPACE):
        instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.STOPPED,
                                                      SensorInstigatorData(sensor_type=SensorType.STANDARD)))


def prepare_backfill(instance, keys: list[str]):  # type: ignore[no-untyped-def]
    """What the UI's launchPartitionBackfill mutation builds for an asset selection and partition names
    (against the loaded code location, as the UI has it loaded before anyone clicks)."""
    # The code server this starts inherits stdout: keep its log lines off the JSON output.
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        return _backfill(instance, keys)
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)


def _backfill(instance, keys: list[str]):  # type: ignore[no-untyped-def]
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(REPO / "workspace.yaml")])) as workspace:
        context = workspace.create_request_context()
        graph = context.asset_graph
        selection = [key for key in graph.materializable_asset_keys if graph.get(key).partitions_def is not None]
        return PartitionBackfill.from_asset_partitions(
            backfill_id=f"bench{int(time.time())}", asset_graph=graph, partition_names=keys,
            asset_selection=selection, backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance,
            all_partitions=False, title=None, description=None, run_config=None,
        )


def backfill_seconds(config: Path, home: Path, keys: list[str]) -> tuple[float, int, float]:
    """Seconds from submission until every run of the backfill succeeded, how many runs it took, and the
    seconds those runs executed (the rest is launching: daemon loops, process start)."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

    env = {**os.environ, "DAGSTER_HOME": str(home), "QRAFT_CONFIG_DIR": str(config)}
    with DagsterInstance.from_config(str(home)) as instance:
        stop_window_sensor(instance)
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            while not instance.get_daemon_heartbeats():  # a user's daemon is up before they click
                time.sleep(0.5)
            backfill = prepare_backfill(instance, keys)
            began = time.perf_counter()
            instance.add_backfill(backfill)
            backfill_id = backfill.backfill_id
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
                finished = runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
                if finished and set(keys) <= instance.get_materialized_partitions(AssetKey("explanation_cards")):
                    seconds = time.perf_counter() - began
                    records = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
                    executing = sum((r.end_time or 0) - (r.start_time or 0) for r in records)
                    return seconds, len(runs), round(executing, 1)
                if any(r.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) for r in runs):
                    raise RuntimeError(f"backfill run failed: {[r.run_id for r in runs]}")
                time.sleep(0.2)
            raise TimeoutError(f"the backfill did not finish in {TIMEOUT_S} s")
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


def main() -> int:
    from qraft_core.runtime import Runtime
    from qraft_dagster.execute import ensure_dagster_home
    from qraft_dagster.partitions import partition_key

    # The daemon's last writes may still land while the folder is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as directory:
        work = Path(directory)
        raw = day_of_raw_events(work)
        configs = {name: write_config(work, name) for name in ("replay", "backfill")}
        for config in configs.values():
            rt = Runtime.load(config)
            rt.store.insert("raw_events", raw)
            ensure_dagster_home(rt.config.dagster_home, rt.config.dagster)
        interval = rt.config.partitions.interval
        keys = [partition_key(START + interval * i) for i in range(WINDOWS)]
        baseline = replay_seconds(configs["replay"], START, START + interval * WINDOWS)
        home = Runtime.load(configs["backfill"]).config.dagster_home
        value, runs, executing = backfill_seconds(configs["backfill"], home, keys)
        print(json.dumps({"bench": "backfill_vs_replay", "value": round(value, 1), "unit": "s",
                          "baseline": round(baseline, 1), "ratio": round(value / baseline, 3), "windows": WINDOWS,
                          "backfill_runs": runs, "backfill_runs_executing_s": executing}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
