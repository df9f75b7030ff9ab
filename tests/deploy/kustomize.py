"""A small kustomize renderer for the features deploy/k8s uses (no kustomize binary here):
resources, namespace, labels, images, replicas, ConfigMap generators (merge behaviour),
strategic-merge patches (lists of named items merge by name) and JSON6902 `add` patches."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
Resource = dict[str, Any]


def render(directory: Path) -> list[Resource]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        data = _generated_data(directory, generator)
        existing = _find(resources, "ConfigMap", generator["name"])
        if generator.get("behavior") == "merge":
            assert existing is not None, f"{generator['name']}: merge into a ConfigMap the base lacks"
            existing.setdefault("data", {}).update(data)
        else:
            assert existing is None, f"{generator['name']}: generated twice"
            resources.append({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": generator["name"]}, "data": data})
    for patch in spec.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        if isinstance(body, list):
            targets = [r for r in resources if _selected(r, patch["target"])]
            assert targets, f"{patch['path']}: the target selects nothing"
            for resource in targets:
                _json_patch(resource, body)
        else:
            target = _find(resources, body["kind"], body["metadata"]["name"])
            assert target is not None, f"{patch['path']}: no {body['kind']} {body['metadata']['name']}"
            _strategic_merge(target, body)
    for image in spec.get("images", []):
        for container in _containers(resources):
            if container["image"] == image["name"]:
                container["image"] = f"{image['newName']}:{image['newTag']}"
    for replicas in spec.get("replicas", []):
        target = next(r for r in resources if r["metadata"]["name"] == replicas["name"] and "replicas" in r["spec"])
        target["spec"]["replicas"] = replicas["count"]
    for label in spec.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    return resources


def _generated_data(directory: Path, generator: Resource) -> dict[str, str]:
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        for line in (directory / env_file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split("=", 1)
                data[key] = value
    for entry in generator.get("files", []):
        key, _, source = entry.rpartition("=") if "=" in entry else ("", "", entry)
        path = directory / source
        data[key or path.name] = path.read_text()
    return data


def _find(resources: list[Resource], kind: str, name: str) -> Resource | None:
    return next((r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name), None)


def _selected(resource: Resource, target: Resource) -> bool:
    if resource["kind"] != target.get("kind", resource["kind"]):
        return False
    key, _, value = target.get("labelSelector", "=").partition("=")
    labels = resource["spec"]["template"]["metadata"]["labels"] if key else {}
    return not key or labels.get(key) == value


def _json_patch(resource: Resource, operations: list[Resource]) -> None:
    for operation in operations:
        assert operation["op"] == "add", operation
        *parents, last = operation["path"].strip("/").split("/")
        node: Any = resource
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if last == "-":
            node.append(copy.deepcopy(operation["value"]))
        else:
            node[last] = copy.deepcopy(operation["value"])


def _strategic_merge(target: Any, patch: Any) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _strategic_merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and all("name" in v for v in value):
            for item in value:
                match = next((c for c in current if c.get("name") == item["name"]), None)
                if match is None:
                    current.append(item)
                else:
                    _strategic_merge(match, item)
        else:
            target[key] = copy.deepcopy(value)


def _containers(resources: list[Resource]) -> list[Resource]:
    return [c for r in resources if "template" in r.get("spec", {})
            for c in r["spec"]["template"]["spec"]["containers"]]


def pod_specs(resources: list[Resource]) -> list[tuple[str, Resource]]:
    """(owner name, pod spec) of every workload; a StatefulSet's claim templates count as volumes."""
    specs = []
    for resource in resources:
        if "template" not in resource.get("spec", {}):
            continue
        pod = copy.deepcopy(resource["spec"]["template"]["spec"])
        claims = [{"name": c["metadata"]["name"], "volumeClaimTemplate": True}
                  for c in resource["spec"].get("volumeClaimTemplates", [])]
        pod["volumes"] = pod.get("volumes", []) + claims
        specs.append((resource["metadata"]["name"], pod))
    return specs
