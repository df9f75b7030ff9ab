"""dagster.yaml written from the `dagster` section of qraft.yaml."""

import pytest
import yaml
from dagster import DagsterInstance

from qraft_core.config import ConfigError, DagsterConfig, load_qraft_config
from qraft_dagster.instance import instance_settings, write_instance_settings

QUEUED = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
          "config": {"max_concurrent_runs": 1}}


def test_default_is_sqlite_under_the_home_with_the_queued_coordinator():
    assert instance_settings(DagsterConfig()) == {"telemetry": {"enabled": False}, "run_coordinator": QUEUED}


def test_postgres_url_becomes_a_postgres_db_block_with_the_psycopg2_driver():
    config = DagsterConfig(storage="postgresql://dagster@db.internal:6432/runs?sslmode=require")
    assert instance_settings(config)["storage"] == {"postgres": {"postgres_db": {
        "username": "dagster", "hostname": "db.internal", "port": 6432, "db_name": "runs",
        "scheme": "postgresql+psycopg2", "params": {"sslmode": "require"},
    }}}


def test_k8s_launcher_and_shared_compute_logs_keep_one_run_at_a_time():
    config = DagsterConfig.model_validate({
        "run_launcher": "k8s", "compute_logs_dir": "/var/lib/qraft/compute-logs",
        "k8s": {"image": "registry.example/qraft:1.0", "namespace": "analytics"},
    })
    settings = instance_settings(config)
    assert settings["run_coordinator"] == QUEUED
    assert settings["run_launcher"] == {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
        "job_image": "registry.example/qraft:1.0", "job_namespace": "analytics",
        "service_account_name": "qraft-dagster", "instance_config_map": "qraft-dagster-instance",
        "env_config_maps": ["qraft-env"], "env_secrets": ["qraft-secrets"],
        "image_pull_policy": "IfNotPresent", "load_incluster_config": True,
    }}
    assert settings["compute_logs"]["config"] == {"base_dir": "/var/lib/qraft/compute-logs"}


@pytest.mark.parametrize(("value", "message"), [
    ("mysql://u@h/db", "expected 'sqlite' or a URL starting with postgresql://"),
    ("postgresql://u:hunter2@h/db", "PGPASSWORD"),
    ("postgresql://u@h", "expected a host and a database name"),
])
def test_bad_storage_names_the_variable_and_key_and_never_prints_a_password(value, message):
    with pytest.raises(ConfigError) as error:
        load_qraft_config("config", {"QRAFT_DAGSTER_STORAGE": value})
    text = str(error.value)
    assert text.startswith("$QRAFT_DAGSTER_STORAGE (environment): dagster.storage:") and message in text
    assert "hunter2" not in text


def test_k8s_launcher_without_an_image_is_a_config_error():
    with pytest.raises(ConfigError, match="k8s.image"):
        load_qraft_config("config", {"QRAFT_DAGSTER_RUN_LAUNCHER": "k8s"})


def test_the_file_follows_the_settings_and_dagster_loads_it(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "")  # the storage sets it; restored after the test
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")
    (home / "dagster.yaml").write_text("run_coordinator: {module: x, class: Y}\n")
    logs = tmp_path / "logs"
    write_instance_settings(home, DagsterConfig(compute_logs_dir=str(logs)))
    assert yaml.safe_load((home / "dagster.yaml").read_text())["run_coordinator"] == QUEUED
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.compute_log_manager._base_dir == str(logs)
        assert type(instance.event_log_storage).__name__ == "BatchingSqliteEventLogStorage"
        assert instance.event_log_storage._base_dir == str(home / "history" / "runs")
