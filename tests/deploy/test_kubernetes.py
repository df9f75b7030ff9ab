"""The Kubernetes manifests: every overlay rendered and each resource validated, strictly, against
the Kubernetes API schemas (bundled by kubernetes-validate), then checked for what the schemas
cannot see: references that resolve, commands that exist, settings that load."""

import copy
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from qraft_core.config import load_qraft_config, load_sources
from qraft_core.detectors import load_detectors
from qraft_dagster.instance import instance_settings

from .conftest import (
    DEPLOY,
    QRAFT_JOB,
    mlflow_admits,
    served_metrics,
    unknown_cli_usage,
    unscraped_alerts,
)
from .kustomize import pod_specs, render

# The oldest Kubernetes release still supported upstream when these manifests were written.
KUBERNETES = "1.32.0"
OVERLAYS = ["local", "production"]
SECRET_KEYS = {line.split("=", 1)[0] for line in (DEPLOY / "k8s" / "secrets.env.example").read_text().splitlines()
               if line and not line.startswith("#")}


def schema_errors(resource: dict) -> list[str]:  # type: ignore[type-arg]
    try:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{resource['kind']}/{resource['metadata']['name']}: {error.message}"]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):  # type: ignore[no-untyped-def]
    return request.param, render(DEPLOY / "k8s" / "overlays" / request.param)


def test_every_resource_is_valid_against_the_kubernetes_schemas(rendered):
    _, resources = rendered
    assert len(resources) > 30
    assert [e for resource in resources for e in schema_errors(resource)] == []


def test_the_schema_check_rejects_a_misspelt_field(rendered):
    _, resources = rendered
    lander = copy.deepcopy(next(r for r in resources if r["metadata"]["name"] == "lander"))
    lander["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert schema_errors(lander) and "imagePullPolcy" in schema_errors(lander)[0]


def test_every_reference_resolves_and_every_secret_key_is_documented(rendered):
    _, resources = rendered
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for owner, pod in pod_specs(resources):
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, owner
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, owner
        if "serviceAccountName" in pod:
            assert ("ServiceAccount", pod["serviceAccountName"]) in names, owner
        for container in pod["containers"]:
            mounted = {v["name"] for v in pod.get("volumes", [])}
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounted, owner
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, owner
                else:
                    assert source["secretRef"]["name"] == "qraft-secrets", owner
            for variable in container.get("env", []):
                secret = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["name"] == "qraft-secrets" and secret["key"] in SECRET_KEYS, owner


def test_every_service_selects_pods(rendered):
    _, resources = rendered
    pod_labels = [r["spec"]["template"]["metadata"]["labels"] for r in resources if "template" in r.get("spec", {})]
    for service in (r for r in resources if r["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pod_labels), service["metadata"]["name"]


def test_qraft_containers_run_commands_that_exist_with_a_valid_configuration(rendered):
    overlay, resources = rendered
    environment = next(r for r in resources if r["metadata"]["name"] == "qraft-env")["data"]
    config = load_qraft_config(DEPLOY.parent / "config", environment)
    assert config.dagster.storage == "postgresql://qraft@postgres:5432/dagster"
    commands = [c["args"] for _, pod in pod_specs(resources) for c in pod["containers"]
                if c.get("args", [""])[0] == "qraft"]
    assert sorted(argv[1] for argv in commands) == ["api", "land", "sources"]
    assert [problem for argv in commands for problem in unknown_cli_usage(argv)] == []


def test_production_runs_each_dagster_run_as_a_job_with_the_instance_qraft_writes():
    resources = render(DEPLOY / "k8s" / "overlays" / "production")
    environment = next(r for r in resources if r["metadata"]["name"] == "qraft-env")["data"]
    config = load_qraft_config(DEPLOY.parent / "config", environment)
    instance = next(r for r in resources if r["metadata"]["name"] == "qraft-dagster-instance")
    assert yaml.safe_load(instance["data"]["dagster.yaml"]) == instance_settings(config.dagster)
    launcher = instance_settings(config.dagster)["run_launcher"]["config"]
    images = {c["image"] for _, pod in pod_specs(resources) for c in pod["containers"]}
    assert launcher["job_image"] in images
    lander = next(r for r in resources if r["metadata"]["name"] == "lander")
    assert lander["spec"]["replicas"] == 3
    webserver = dict(pod_specs(resources))["dagster-webserver"]
    assert {"name": "compute-logs", "mountPath": config.dagster.compute_logs_dir} in webserver["containers"][0]["volumeMounts"]


def test_nats_routes_name_every_pod_of_the_statefulset(rendered):
    _, resources = rendered
    nats = next(r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "nats")
    config = next(r for r in resources if r["metadata"]["name"] == "nats-config")["data"]["nats.conf"]
    routes = sorted(line.strip() for line in config.splitlines() if line.strip().startswith("nats://"))
    service = nats["spec"]["serviceName"]
    assert routes == [f"nats://nats-{i}.{service}:6222" for i in range(nats["spec"]["replicas"])]


def test_mlflow_answers_qraft_at_its_service_name_and_through_a_port_forward(rendered):
    _, resources = rendered
    uri = next(r for r in resources if r["metadata"]["name"] == "qraft-env")["data"]["QRAFT_MLFLOW_TRACKING_URI"]
    [command] = [c["args"] for _, pod in pod_specs(resources) for c in pod["containers"] if c["name"] == "mlflow"]
    for host in (urlsplit(uri).netloc, "mlflow.qraft.svc.cluster.local:5000", "mlflow.qraft.svc:5000", "localhost:5000"):
        assert mlflow_admits(command, host), host
    assert not mlflow_admits(command, "attacker.example:5000")


def scrape_job_name(pod_labels: dict[str, str]) -> str:
    """The `job` label Prometheus gives a discovered pod: the job's name, unless a relabeling sets it."""
    config = yaml.safe_load((DEPLOY / "k8s" / "base" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    name: str = job["job_name"]
    for rule in job["relabel_configs"]:
        if rule.get("target_label") == "job":
            [source] = rule["source_labels"]
            label = source.removeprefix("__meta_kubernetes_pod_label_")
            value = next(v for k, v in pod_labels.items() if k.replace(".", "_").replace("/", "_").replace("-", "_") == label)
            name = rule["replacement"].replace("$1", value)
    return name


def test_prometheus_scrapes_every_metric_an_alert_reads_from_the_pod_serving_it(rendered):
    _, resources = rendered
    scraped: set[str] = set()
    for workload in (r for r in resources if "template" in r.get("spec", {})):
        template = workload["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        served = [s for c in template["spec"]["containers"] if (s := served_metrics(c.get("args", []))) is not None]
        name = workload["metadata"]["name"]
        # Every pod serving metrics is annotated for discovery, with the port it serves them on.
        assert (annotations.get("prometheus.io/scrape") == "true") == bool(served), name
        if served:
            [(port, families)] = served
            assert annotations["prometheus.io/port"] == str(port), name
            assert QRAFT_JOB.fullmatch(scrape_job_name(template["metadata"]["labels"])), name
            scraped |= families
    assert unscraped_alerts(scraped) == {}


# These images start as root and hand their data folder to their own user themselves.
OWN_THEIR_VOLUMES = ("clickhouse/clickhouse-server:", "postgres:", "nats:")


def test_every_pod_writing_a_persistent_volume_owns_it(rendered):
    # Block-storage volumes (EBS, PD, Azure Disk) are root-owned: a non-root process writes to one only
    # with the pod's fsGroup.
    _, resources = rendered
    checked = []
    for owner, pod in pod_specs(resources):
        persistent = [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v or v.get("volumeClaimTemplate")]
        if not persistent or all(c["image"].startswith(OWN_THEIR_VOLUMES) for c in pod["containers"]):
            continue
        context = pod.get("securityContext", {})
        assert context.get("fsGroup") is not None and context.get("runAsNonRoot") is True, owner
        checked.append(owner)
    assert {"sources", "mlflow", "prometheus"} <= set(checked)


def test_qraft_pods_read_the_configuration_from_a_config_map_made_from_config(rendered, tmp_path):
    _, resources = rendered
    environment = next(r for r in resources if r["metadata"]["name"] == "qraft-env")["data"]
    files = next(r for r in resources if r["metadata"]["name"] == "qraft-config")["data"]
    assert set(files) == {p.name for p in (DEPLOY.parent / "config").glob("*.yaml")} - {"sources.examples.yaml"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = load_qraft_config(tmp_path, environment)
    assert load_sources(tmp_path) is not None and load_detectors(tmp_path).enabled
    assert config.store.dsn is not None
    for owner, pod in pod_specs(resources):
        for container in (c for c in pod["containers"] if c["image"].split("/")[-1].startswith("qraft:")):
            if container["name"] == "mlflow":
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volume = mounts.get(environment["QRAFT_CONFIG_DIR"])
            assert volume is not None, owner
            assert next(v for v in pod["volumes"] if v["name"] == volume)["configMap"]["name"] == "qraft-config", owner
