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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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


class _ScopedEnvironment:
    """Sets default environment values while at least one caller is inside it, and removes them
    after the last one leaves.

    MLflow's client takes its HTTP limits only from the environment (read at each request), so
    the tracker's limits are set around its own calls: a user's MLflow calls outside them and
    child processes keep MLflow's defaults. Values already set (the user's) are left as they are.
    """

    def __init__(self, defaults: Mapping[str, str]) -> None:
        self.defaults = dict(defaults)
        self._lock = threading.Lock()
        self._inside = 0
        self._added: list[str] = []

    @contextmanager
    def applied(self) -> Iterator[None]:
        with self._lock:
            if self._inside == 0:
                self._added = [name for name in self.defaults if name not in os.environ]
                os.environ.update({name: self.defaults[name] for name in self._added})
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    for name in self._added:
                        # A value set meanwhile by someone else is theirs.
                        if os.environ.get(name) == self.defaults[name]:
                            del os.environ[name]


_http_limits = _ScopedEnvironment(_HTTP_DEFAULTS)


class TrackingPause:
    """Until when tracking to each URI is skipped after a failure, read on one clock.

    Callers for one URI take turns: while an attempt is in flight the others wait for it, so an
    outage costs one bounded attempt and one warning however many threads were tracking.
    """

    def __init__(self, seconds: float = PAUSE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._until: dict[str, float] = {}
        self._turns: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @contextmanager
    def turn(self, uri: str) -> Iterator[bool]:
        """Holds `uri`'s turn; yields whether to try it now (False while it is paused)."""
        with self._lock:
            turn = self._turns.setdefault(uri, threading.Lock())
        with turn:
            yield self.clock() >= self._until.get(uri, float("-inf"))

    def pause(self, uri: str) -> None:
        """Skip `uri` for `seconds` from now (called in its turn, after a failure)."""
        self._until[uri] = self.clock() + self.seconds


# The pause shared by the trackers of a process (each materialization makes its own tracker).
process_pause = TrackingPause()


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
                 pause: TrackingPause | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.enabled = enabled
        self.pause = process_pause if pause is None else pause

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
        skipped for the pause's `seconds`, then tried again.
        """
        if not self.enabled:
            return None
        with self.pause.turn(self.tracking_uri) as open_:
            if not open_:
                return None
            try:
                with _http_limits.applied():
                    return self._log_run(run_name, params, metrics, tags)
            except Exception as exc:  # noqa: BLE001 - any MLflow failure (server, store, client) is skipped
                self.pause.pause(self.tracking_uri)
                log.warning("could not record run %r in MLflow at %s (records skipped for %.0f s): %s", run_name,
                            redact(self.tracking_uri), self.pause.seconds, redact(str(exc)))
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
