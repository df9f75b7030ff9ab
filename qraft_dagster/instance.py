"""The Dagster instance settings (`dagster.yaml`) Qraft writes from the `dagster` section of qraft.yaml.

Qraft owns the file: it is rewritten from configuration whenever a command opens the instance,
so storage, run launcher and compute logs are settings, not hand edits. Whatever the settings,
runs go through the queued coordinator one at a time, in the order they were requested: the
self-dependent detections asset needs window N-1's state before window N.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from qraft_core.config import DagsterConfig

QUEUED_ONE_AT_A_TIME = {
    "module": "dagster.core.run_coordinator",
    "class": "QueuedRunCoordinator",
    "config": {"max_concurrent_runs": 1},
}



def batching_sqlite_event_log(dagster_home: Path) -> dict[str, Any]:
    """Dagster's default SQLite event log, in the same files, storing a run's batches of events (a ranged
    run's planned and per-window materializations) in one transaction each; runs and schedules keep the
    defaults. The files are named by absolute path, as Dagster names them for the home it loads."""
    return {"module": "qraft_dagster.event_log", "class": "BatchingSqliteEventLogStorage",
            "config": {"base_dir": str(dagster_home.resolve() / "history" / "runs")}}


def postgres_db(url: str) -> dict[str, Any]:
    """dagster-postgres' `postgres_db` block for a URL without a password (libpq reads PGPASSWORD)."""
    parts = urlsplit(url)
    block: dict[str, Any] = {
        "username": unquote(parts.username or "postgres"),
        "hostname": parts.hostname,
        "port": parts.port or 5432,
        "db_name": parts.path.strip("/"),
        # psycopg2 is the driver dagster-postgres is built and tested with; psycopg 3 is not.
        "scheme": "postgresql+psycopg2",
    }
    params = dict(parse_qsl(parts.query))
    if params:
        block["params"] = params
    return block


def instance_settings(config: DagsterConfig, dagster_home: Path | None = None) -> dict[str, Any]:
    """The content of dagster.yaml for these settings; written into `dagster_home`, SQLite storage batches
    event writes (printed for another machine, it is Dagster's default)."""
    settings: dict[str, Any] = {"telemetry": {"enabled": False}, "run_coordinator": QUEUED_ONE_AT_A_TIME}
    if config.storage != "sqlite":
        settings["storage"] = {"postgres": {"postgres_db": postgres_db(config.storage)}}
    elif dagster_home is not None:
        settings["event_log_storage"] = batching_sqlite_event_log(dagster_home)
    if config.run_launcher == "k8s":
        k8s = config.k8s
        settings["run_launcher"] = {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "job_image": k8s.image,
                "job_namespace": k8s.namespace,
                "service_account_name": k8s.service_account,
                "instance_config_map": k8s.instance_config_map,
                "env_config_maps": list(k8s.env_config_maps),
                "env_secrets": list(k8s.env_secrets),
                "image_pull_policy": k8s.image_pull_policy,
                "load_incluster_config": True,
            },
        }
        if k8s.compute_logs_claim:
            settings["run_launcher"]["config"] |= {
                "volumes": [{"name": "compute-logs", "persistentVolumeClaim": {"claimName": k8s.compute_logs_claim}}],
                "volume_mounts": [{"name": "compute-logs", "mountPath": config.compute_logs_dir}],
            }
    if config.compute_logs_dir:
        settings["compute_logs"] = {
            "module": "dagster.core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": config.compute_logs_dir},
        }
    return settings


def write_instance_settings(dagster_home: Path, config: DagsterConfig) -> Path:
    """Write dagster.yaml atomically (several processes open the instance at once)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = yaml.safe_dump(instance_settings(config, dagster_home), sort_keys=False)
    if target.exists() and target.read_text() == text:
        return target
    handle, temporary = tempfile.mkstemp(dir=dagster_home, prefix=".dagster.yaml.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temporary, target)
    return target


def main(argv: list[str] | None = None) -> None:
    """`python -m qraft_dagster.instance [--print]`: write dagster.yaml for this configuration and
    print DAGSTER_HOME, or print the file's content (for a Kubernetes ConfigMap)."""
    from qraft_core.config import ConfigError, load_qraft_config

    args = sys.argv[1:] if argv is None else argv
    try:
        config = load_qraft_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args == ["--print"]:
        print(yaml.safe_dump(instance_settings(config.dagster), sort_keys=False), end="")
        return
    write_instance_settings(config.dagster_home, config.dagster)
    print(config.dagster_home)


if __name__ == "__main__":
    main()
