"""The Compose file: valid against the Compose specification, and consistent with the repository
(mounted files exist, Qraft commands and options exist, the environment is a valid configuration)."""

import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from qraft_core.config import load_qraft_config
from qraft_dagster.instance import instance_settings

from .conftest import (
    DEPLOY,
    QRAFT_JOB,
    interpolate,
    mlflow_admits,
    served_metrics,
    unknown_cli_usage,
    unscraped_alerts,
)

COMPOSE = DEPLOY / "compose" / "compose.yaml"
SCHEMA = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
STACK = {"clickhouse", "nats-1", "nats-2", "nats-3", "postgres", "dagster-code", "dagster-webserver",
         "dagster-daemon", "lander", "sources", "api", "monitor", "mlflow", "superset", "prometheus",
         "alertmanager", "grafana"}


def compose_errors(document: dict) -> list[str]:  # type: ignore[type-arg]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification(compose):
    assert compose_errors(compose) == []
    assert set(compose["services"]) == STACK


def test_the_schema_check_rejects_a_broken_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["lander"]["restart"] = ["always"]
    broken["services"]["api"]["healtcheck"] = {"test": "true"}
    errors = compose_errors(broken)
    assert any(e.startswith("services/lander/restart") for e in errors)
    assert any("healtcheck" in e for e in errors)


def test_every_mounted_file_and_build_context_exists(compose):
    base = COMPOSE.parent
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (base / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            context = base / (build if isinstance(build, str) else build["context"])
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.exists(), f"{name}: {dockerfile} does not exist"


def test_qraft_commands_and_options_exist(compose):
    commands = [s["command"] for s in compose["services"].values() if s.get("command", [None])[0] == "qraft"]
    assert len(commands) == 3
    assert [problem for argv in commands for problem in unknown_cli_usage(argv)] == []
    assert unknown_cli_usage(["qraft", "land", "--metrics-prot", "1"]) == [
        "unknown option '--metrics-prot' in qraft land --metrics-prot 1"
    ]


def test_the_qraft_environment_is_a_valid_configuration_with_dagster_on_postgres(compose, tmp_path):
    environment = {k: interpolate(str(v)) for k, v in compose["services"]["lander"]["environment"].items()}
    config = load_qraft_config(DEPLOY.parent / "config", environment)
    assert config.store.dsn == "http://qraft:placeholder@clickhouse:8123/default"
    settings = instance_settings(config.dagster)
    assert settings["storage"]["postgres"]["postgres_db"]["hostname"] == "postgres"
    assert settings["run_coordinator"]["config"] == {"max_concurrent_runs": 1}


def test_prometheus_scrapes_every_metric_an_alert_reads_from_the_process_serving_it(compose):
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    served = {name: served_metrics(service.get("command", [])) for name, service in compose["services"].items()}
    scraped: set[str] = set()
    for job in scrape["scrape_configs"]:
        assert QRAFT_JOB.fullmatch(job["job_name"]), job["job_name"]
        for target in (t for c in job["static_configs"] for t in c["targets"]):
            host, port = target.split(":")
            assert served.get(host) is not None and served[host][0] == int(port), target
            scraped |= served[host][1]
    assert unscraped_alerts(scraped) == {}
    # Every process serving metrics is scraped.
    assert {f"{name}:{s[0]}" for name, s in served.items() if s is not None} == {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert scrape["rule_files"] == ["alerts.yml"]


def test_the_scrape_check_sees_an_alert_without_a_target():
    assert unscraped_alerts({"qraft_events_landed"})["QraftWindowsBehind"] == {"qraft_windows_behind"}


def test_no_secret_is_written_into_the_file(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|_KEY$", key):
                assert str(value).startswith("${"), (name, key)
            # A URL's password, too, only ever comes from the environment.
            password = re.search(r"//[^/@:]*:([^@/]*)@", str(value))
            assert password is None or password[1].startswith("${"), (name, key)


def test_the_three_nats_servers_form_one_jetstream_cluster(compose):
    def flag(command: list[str], name: str) -> str:
        return command[command.index(name) + 1]

    nodes = {name: s["command"] for name, s in compose["services"].items() if name.startswith("nats-")}
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    for name, command in nodes.items():
        assert "--jetstream" in command and flag(command, "--name") == name
        assert flag(command, "--cluster_name") == "qraft"
        routes = {r.removeprefix("nats://").split(":")[0] for r in flag(command, "--routes").split(",")}
        assert routes == set(nodes) - {name}


def test_mlflow_answers_qraft_at_its_service_name_and_the_published_port(compose):
    uri = compose["services"]["lander"]["environment"]["QRAFT_MLFLOW_TRACKING_URI"]
    command = compose["services"]["mlflow"]["command"]
    assert mlflow_admits(command, urlsplit(uri).netloc)
    assert mlflow_admits(command, "localhost:5000") and mlflow_admits(command, "127.0.0.1:5000")
    assert not mlflow_admits(command, "attacker.example:5000")
