"""Dagster's side of pipeline monitoring: runs by status and the detectors' latency, for Prometheus.

`python -m qraft_dagster.monitoring` serves them on `/metrics` (port 9466 by default) from the
Dagster instance under the data directory, so qraft_core never imports Dagster.

- runs: finished runs as counters by status (an increase of failures is an alert), runs in
  flight (queued, starting, started) as a gauge;
- detection latency: wall seconds per window and per bar of the newest `detections`
  materialization (every configured detector over its windows, from the runner's metadata),
  and each detector's own seconds per window and per bar (label `detector`), to tell which one
  is slow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qraft_core.config import ConfigError, load_qraft_config
from qraft_core.redact import redact
from qraft_dagster.execute import open_instance

DEFAULT_PORT = 9466
FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
IN_FLIGHT = (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)

# name: (type, help, labels): the families this collector yields, for panels, rules and their tests.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "qraft_runs": ("counter", "Finished Dagster runs by status", ("status",)),
    "qraft_runs_in_flight": ("gauge", "Dagster runs queued, starting or started", ("status",)),
    "qraft_detection_seconds_per_window": (
        "gauge", "Wall seconds per window of the newest detections materialization", ()),
    "qraft_detection_seconds_per_bar": (
        "gauge", "Wall seconds per feature bar of the newest detections materialization", ()),
    "qraft_detector_seconds_per_window": (
        "gauge", "Seconds one detector spent per window of the newest detections materialization", ("detector",)),
    "qraft_detector_seconds_per_bar": (
        "gauge", "Seconds one detector spent per bar it read in the newest detections materialization",
        ("detector",)),
}


def _family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    kind, help_text, labels = FAMILIES[name]
    family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return family(name, help_text, labels=list(labels) or None)


def newest_detection_run(instance: DagsterInstance) -> dict[str, Any]:
    """The runner's metadata of the newest detections materialization, its `run_summary` ({} before any)."""
    records = instance.fetch_materializations(AssetKey("detections"), limit=1).records
    materialization = records[0].asset_materialization if records else None
    entry = materialization.metadata.get("run_summary") if materialization is not None else None
    return entry.value if entry is not None and isinstance(entry.value, dict) else {}


def _ratios(numerators: Any, denominators: Any) -> dict[str, float]:
    """numerator / denominator per key where both are numbers and the denominator is positive."""
    if not isinstance(numerators, dict) or not isinstance(denominators, dict):
        return {}
    return {key: value / denominators[key] for key, value in sorted(numerators.items())
            if isinstance(value, (int, float)) and isinstance(denominators.get(key), (int, float))
            and denominators[key] > 0}


class DagsterRunsCollector(Collector):
    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance

    def describe(self) -> Iterator[Metric]:
        return iter([_family(name) for name in FAMILIES])

    def collect(self) -> Iterator[Metric]:
        families = {name: _family(name) for name in FAMILIES}
        for status in FINISHED:
            count = self.instance.get_runs_count(RunsFilter(statuses=[status]))
            families["qraft_runs"].add_metric([status.value.lower()], count)
        for status in IN_FLIGHT:
            count = self.instance.get_runs_count(RunsFilter(statuses=[status]))
            families["qraft_runs_in_flight"].add_metric([status.value.lower()], count)
        run = newest_detection_run(self.instance)
        totals = _ratios({"window": run.get("latency_s"), "bar": run.get("latency_s")},
                         {"window": run.get("windows"), "bar": run.get("rows_processed")})
        for unit, seconds in totals.items():
            families[f"qraft_detection_seconds_per_{unit}"].add_metric([], seconds)
        windows = run.get("windows")
        spent = run.get("detector_seconds")
        per_window = _ratios(spent, dict.fromkeys(spent, windows)) if isinstance(spent, dict) else {}
        for detector, seconds in per_window.items():
            families["qraft_detector_seconds_per_window"].add_metric([detector], seconds)
        for detector, seconds in _ratios(spent, run.get("detector_bars")).items():
            families["qraft_detector_seconds_per_bar"].add_metric([detector], seconds)
        return iter(families.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qraft_dagster.monitoring",
                                     description="Serve Dagster run and detection-latency metrics on /metrics.")
    parser.add_argument("--config", help="configuration directory (default: $QRAFT_CONFIG_DIR or config)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    try:
        config = load_qraft_config(args.config)
    except ConfigError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DagsterRunsCollector(open_instance(config.dagster_home, config.dagster)))
    try:
        # Loopback unless a container or pod must be scraped from outside (QRAFT_METRICS_HOST=0.0.0.0).
        host = os.environ.get("QRAFT_METRICS_HOST", "127.0.0.1")
        server, _thread = start_http_server(args.port, addr=host, registry=registry)
    except OSError as exc:
        print(f"error: port {args.port} unavailable ({exc})", file=sys.stderr)
        return 2
    print(f"serving http://127.0.0.1:{server.server_port}/metrics", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
