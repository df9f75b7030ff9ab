"""Experiment records of detector runs in MLflow.

One MLflow run per detections materialization: the detectors' parameters,
the library versions, and what the run did (rows, signals per detector,
anomaly rate, latency, each detector's seconds). A replay's run carries its
detectors' seconds over the whole replay too. MLflow is imported only when a run is logged, and a
disabled tracker does nothing, so nothing else depends on it.

>>> Tracker("", enabled=False).log_run("noop", {"a": 1}, {"m": 1.0}) is None
True
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qraft_core.events import iso
from qraft_core.redact import redact

if TYPE_CHECKING:
    from qraft_core.config import QraftConfig
    from qraft_core.detectors.config import DetectorsConfig

log = logging.getLogger(__name__)

# MLflow rejects longer parameter values.
_MAX_PARAM_CHARS = 500
# MLflow's own defaults (7 retries with backoff, 120 s per request) hold a detections run for
# minutes when the server is down or hangs; a run waits a few seconds instead. A value the user
# set in the environment wins.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# After a failure, tracking to that URI is skipped this long (one warning, not one per window).
PAUSE_SECONDS = 300.0
# Tracking URI -> clock reading until which it is skipped; shared by the trackers of a process
# (each materialization makes its own).
_paused_until: dict[str, float] = {}


def default_tracking_uri(data_dir: Path) -> str:
    return f"sqlite:///{data_dir.resolve() / 'mlflow.db'}"


def library_versions() -> dict[str, str]:
    """Versions of the detector engines in this process ("unavailable" when missing)."""
    import river

    from qraft_core.detectors.capymoa_engine import capymoa_available, capymoa_version

    return {
        "river": str(river.__version__),
        "capymoa": capymoa_version() if capymoa_available() else "unavailable",
    }


def detector_seconds_metrics(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each detector's seconds reading bars (the runner's `detector_seconds`) as MLflow metrics.

    >>> detector_seconds_metrics({"vol_drift": 0.25, "idle": 0})
    {'detector_seconds.vol_drift': 0.25, 'detector_seconds.idle': 0.0}
    """
    return {f"detector_seconds.{name}": float(value) for name, value in seconds.items()}


class Tracker:
    """Logs runs to MLflow at `tracking_uri` under `experiment`; a no-op when disabled."""

    def __init__(self, tracking_uri: str, experiment: str = "qraft", enabled: bool = True,
                 pause_seconds: float = PAUSE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.enabled = enabled
        self.pause_seconds = pause_seconds
        self.clock = clock

    @classmethod
    def from_config(cls, config: QraftConfig) -> Tracker:
        mlflow = config.mlflow
        uri = mlflow.tracking_uri or default_tracking_uri(config.data_dir)
        return cls(uri, mlflow.experiment, mlflow.enabled)

    def log_run(
        self,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Record one run; returns its MLflow run id (None when disabled or when MLflow failed).

        A tracking outage never fails what is being tracked: it is logged once and records are
        skipped for `pause_seconds`, then tried again.
        """
        if not self.enabled or self.clock() < _paused_until.get(self.tracking_uri, float("-inf")):
            return None
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            return self._log_run(run_name, params, metrics, tags)
        except Exception as exc:  # noqa: BLE001 - any MLflow failure (server, store, client) is skipped
            _paused_until[self.tracking_uri] = self.clock() + self.pause_seconds
            log.warning("could not record run %r in MLflow at %s (records skipped for %.0f s): %s", run_name,
                        redact(self.tracking_uri), self.pause_seconds, redact(str(exc)))
            return None

    def _log_run(
        self, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str] | None
    ) -> str:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(self.experiment)
        )
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        run_id: str = run.info.run_id
        client.log_batch(
            run_id,
            params=[mlflow.entities.Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in sorted(params.items())],
            metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in sorted(metrics.items())],
        )
        client.set_terminated(run_id)
        return run_id

    def log_detections(
        self, config: DetectorsConfig, start: datetime, end: datetime, metadata: Mapping[str, Any]
    ) -> str | None:
        """Record one detections materialization (metadata as returned by the runner)."""
        if not self.enabled:
            return None
        params: dict[str, Any] = {"window_start": iso(start), "window_end": iso(end)}
        for spec in config.enabled:
            params[f"{spec.name}.algorithm"] = f"{spec.engine}.{spec.algorithm}"
            params[f"{spec.name}.features"] = ",".join(spec.features)
            params[f"{spec.name}.seed"] = spec.seed
            for key, value in sorted(spec.params.items()):
                params[f"{spec.name}.{key}"] = value
        by_detector: Mapping[str, int] = metadata.get("signals_by_detector", {})
        rows = int(metadata.get("rows_processed", 0))
        anomalies = sum(n for name, n in by_detector.items() if _kind_of(config, name) == "anomaly")
        metrics: dict[str, float] = {
            "rows_processed": rows,
            "events_processed": int(metadata.get("events_processed", 0)),
            "windows": int(metadata.get("windows", 0)),
            "latency_s": float(metadata.get("latency_s", 0.0)),
            "signals_total": sum(by_detector.values()),
            "anomaly_rate": anomalies / rows if rows else 0.0,
        }
        metrics.update({f"signals.{name}": n for name, n in by_detector.items()})
        metrics.update(detector_seconds_metrics(metadata.get("detector_seconds", {})))
        tags = {f"version.{lib}": version for lib, version in library_versions().items()}
        tags["engines"] = ",".join(metadata.get("engines", []))
        return self.log_run(f"detections {iso(start)}", params, metrics, tags)


def _kind_of(config: DetectorsConfig, name: str) -> str:
    for spec in config.detectors:
        if spec.name == name:
            return spec.kind.value
    return ""
