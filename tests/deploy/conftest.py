"""Helpers for checking the deployment files offline (Docker and a cluster are not used)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def interpolate(text: str, value: str = "placeholder") -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, each replaced by one value."""
    return INTERPOLATION.sub(value, text)


def unknown_cli_usage(argv: Sequence[str]) -> list[str]:
    """What in a `qraft …` command line the CLI does not know: a subcommand or an option."""
    from qraft_cli import main

    command: click.Command = main
    args = list(argv[1:])
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        if sub is None:
            return [f"unknown command {args[0]!r} in {shlex.join(argv)}"]
        command, args = sub, args[1:]
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    return [f"unknown option {arg!r} in {shlex.join(argv)}"
            for arg in args if arg.startswith("--") and arg.split("=")[0] not in options]


def mlflow_admits(argv: Sequence[str], host: str) -> bool:
    """Whether `mlflow server` started with `argv` answers a request whose Host header is `host`
    (MLflow 3 turns away other hosts than localhost and private IPs unless --allowed-hosts names them)."""
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    allowed = argv[argv.index("--allowed-hosts") + 1].split(",") if "--allowed-hosts" in argv else None
    return is_allowed_host_header(allowed or get_default_allowed_hosts(), host)


ALERTS = REPO / "dashboards" / "prometheus" / "alerts.yml"
_METRIC_NAME = re.compile(r"\b(qraft_[a-z0-9_]+)\b")
_SERIES_SUFFIX = re.compile(r"_(?:total|bucket|sum|count|created)$")
# The job names the target-down alert and the Grafana "up" panel select.
QRAFT_JOB = re.compile(r"qraft-.*")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_metrics() -> dict[str, set[str]]:
    """The metric families each alert rule reads (a counter's `_total`, a histogram's `_bucket` dropped)."""
    return {rule["alert"]: {_SERIES_SUFFIX.sub("", name) for name in _METRIC_NAME.findall(rule["expr"])}
            for rule in alert_rules()}


def _option(argv: Sequence[str], name: str) -> int:
    return int(argv[argv.index(name) + 1])


def served_metrics(argv: Sequence[str]) -> tuple[int, set[str]] | None:
    """The port a process started with `argv` serves /metrics on and the metric families there (None
    for a process that serves none)."""
    from prometheus_client.metrics import MetricWrapperBase

    from qraft_core import metrics, monitoring
    from qraft_dagster import monitoring as dagster_monitoring

    argv = list(argv)
    if argv[:2] in (["qraft", "land"], ["qraft", "sources"]) and "--metrics-port" in argv:
        return _option(argv, "--metrics-port"), {
            collector._name for collector in vars(metrics).values() if isinstance(collector, MetricWrapperBase)}
    if argv[:2] == ["qraft", "api"]:
        return _option(argv, "--port"), set(monitoring.FAMILIES)
    if argv[:3] == ["python", "-m", "qraft_dagster.monitoring"]:
        return _option(argv, "--port"), set(dagster_monitoring.FAMILIES)
    return None


def unscraped_alerts(scraped: set[str]) -> dict[str, set[str]]:
    """Each alert rule with the metric families it reads that no scraped target serves."""
    return {alert: names - scraped for alert, names in alert_metrics().items() if names - scraped}
