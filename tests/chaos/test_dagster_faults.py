"""Drill on the Dagster side of `qraft up`: the code server's gRPC worker killed with SIGKILL.

`dagster dev` stays alive then, but nothing starts the worker again: the window sensor stops
ticking and no window is materialized any more. `up` notices the silent sensor, restarts
`dagster dev` (its whole process group) and windows are materialized again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from qraft_core.bus.embedded import free_port
from tests.chaos.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


def processes_of(dagster_home: Path, marker: str) -> list[int]:
    """The pids of processes whose command line holds `marker` and that serve `dagster_home`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in command and f"DAGSTER_HOME={dagster_home}".encode() in environ:
            found.append(int(entry.name))
    return found


def read_instance(dagster_home: Path, read: Callable[[Any], int]) -> int:
    """`read` of the Dagster instance, or 0 while its storage cannot be read: while `dagster dev` is
    restarted its daemon and runs open the same SQLite files, and a reader may meet them locked or
    half created under load, raised as SQLAlchemy's, sqlite3's or Dagster's own errors (a drill
    that never gets past this still fails, when its wait runs out)."""
    from dagster import DagsterInstance

    try:
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            return read(instance)
    except Exception:
        return 0


def sensor_ticks(dagster_home: Path) -> int:
    """How many ticks the daemon recorded for the window sensor."""
    from qraft_dagster.execute import sensor_origins, workspace_file

    def ticks(instance: Any) -> int:
        origins = sensor_origins(workspace_file(dagster_home))
        return sum(len(instance.get_ticks(origin.get_id(), origin.get_selector().get_id())) for origin in origins)

    return read_instance(dagster_home, ticks)


def materialized_windows(dagster_home: Path) -> int:
    from qraft_dagster.sensors.windows import LAST_ASSET

    return read_instance(dagster_home, lambda instance: len(instance.get_materialized_partitions(LAST_ASSET)))


def test_a_killed_code_server_worker_is_noticed_and_dagster_restarted_until_windows_are_materialized(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=20)
    settings = yaml.safe_load((config / "qraft.yaml").read_text())
    settings["partitions"].pop("end")  # live data: an open range
    settings["partitions"]["start"] = start.isoformat().replace("+00:00", "Z")
    (config / "qraft.yaml").write_text(yaml.safe_dump(settings))
    (config / "sources.yaml").write_text("sources: []\n")
    readings = tmp_path / "readings.csv"
    readings.write_text("timestamp,value\n" + "".join(
        f"{(start + timedelta(seconds=10 * index)).isoformat().replace('+00:00', 'Z')},{index % 7}\n"
        for index in range(90)))
    data, output = tmp_path / "data", tmp_path / "up.out"
    dagster_home = data / "dagster"
    env = {**os.environ, "QRAFT_DATA_DIR": str(data), "QRAFT_LANDER_METRICS_PORT": "0",
           "QRAFT_API_PORT": str(free_port()), "QRAFT_DAGSTER_PORT": str(free_port())}
    env.pop("QRAFT_NATS_URL", None)
    with output.open("wb") as sink:
        up = subprocess.Popen([sys.executable, "-m", "qraft_cli", "--config-dir", str(config), "up"],
                              env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # (Read once `up` has created the instance and started Dagster: see `create_instance_storage`.)
        assert wait_for(lambda: "Dagster UI:" in output.read_text() and sensor_ticks(dagster_home) > 0,
                        timeout_s=600, every_s=5), output.read_text()
        workers = processes_of(dagster_home, "dagster api grpc")
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: "dagster has run no window sensor tick since" in output.read_text(),
                        timeout_s=900, every_s=5), output.read_text()
        # Data that arrives once Dagster is restarted is materialized.
        (config / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
            "name": "readings", "type": "file", "endpoint": str(readings), "parser": "generic",
            "options": {"time_field": "timestamp"}}]}))
        assert wait_for(lambda: materialized_windows(dagster_home) > 0, timeout_s=900, every_s=5), \
            output.read_text() + (data / "logs" / "dagster.log").read_text()[-5000:]
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
    assert up.returncode == 0, output.read_text()
    assert not processes_of(dagster_home, "dagster")  # nothing of Dagster is left running

