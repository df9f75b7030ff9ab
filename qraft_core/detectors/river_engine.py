"""Detectors run by River (and small pure-Python baselines beside it).

>>> from datetime import UTC, datetime, timedelta
>>> import random
>>> import polars as pl
>>> rng = random.Random(7)
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> bars = pl.DataFrame({
...     "bar_time": [t0 + timedelta(seconds=10 * i) for i in range(400)],
...     "realized_vol": [rng.gauss(1.0 if i < 200 else 3.0, 0.2) for i in range(400)]})
>>> adwin = RiverADWIN("vol_adwin", "binance_spot:BTCUSDT", ["realized_vol"])
>>> found = adwin.update(bars)
>>> found[0].type, found[0].time > t0 + timedelta(seconds=2000)
('concept_drift', True)
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import river
from river import anomaly, cluster, drift, preprocessing

from qraft_core.detectors.anomaly import (
    ANOMALY_DEFAULTS,
    ANOMALY_LIMITS,
    TREE_HEIGHT,
    AnomalyDetector,
)
from qraft_core.detectors.base import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    DetectorParamsError,
    Limit,
    Signal,
    StreamDetector,
    confidence_of,
    register_detector,
)
from qraft_core.detectors.drift import DRIFT_DEFAULTS, DRIFT_LIMITS, DriftDetector


class RiverDetector(StreamDetector):
    engine: ClassVar[str] = "river"

    @property
    def algorithm(self) -> str:
        return "river." + type(self).__name__.removeprefix("River")

    @property
    def version(self) -> str:
        return str(river.__version__)


@register_detector("ADWIN")
class RiverADWIN(RiverDetector, DriftDetector):
    defaults: ClassVar[dict[str, Any]] = {**DRIFT_DEFAULTS, "delta": 0.002, "clock": 1, "grace_period": 10}
    limits: ClassVar[dict[str, Limit]] = {
        **DRIFT_LIMITS, "delta": PROBABILITY, "clock": AT_LEAST_ONE, "grace_period": AT_LEAST_ONE}

    def _new_model(self) -> Any:
        return drift.ADWIN(
            delta=self.param("delta"), clock=self.param("clock"), grace_period=self.param("grace_period")
        )

    def _feed(self, model: Any, value: float) -> bool:
        model.update(value)
        return bool(model.drift_detected)


@register_detector("PageHinkley")
class RiverPageHinkley(RiverDetector, DriftDetector):
    defaults: ClassVar[dict[str, Any]] = {
        **DRIFT_DEFAULTS,
        "min_instances": 30,
        "delta": 0.005,
        "threshold": 50.0,
        "alpha": 0.9999,
        "mode": "both",
    }
    limits: ClassVar[dict[str, Limit]] = {
        **DRIFT_LIMITS, "min_instances": AT_LEAST_ONE, "delta": NON_NEGATIVE, "threshold": POSITIVE,
        "alpha": FRACTION, "mode": Limit(choices=("up", "down", "both")),
    }

    def _new_model(self) -> Any:
        return drift.PageHinkley(
            min_instances=self.param("min_instances"),
            delta=self.param("delta"),
            threshold=self.param("threshold"),
            alpha=self.param("alpha"),
            mode=self.param("mode"),
        )

    _feed = RiverADWIN._feed


@register_detector("KSWIN")
class RiverKSWIN(RiverDetector, DriftDetector):
    defaults: ClassVar[dict[str, Any]] = {**DRIFT_DEFAULTS, "alpha": 0.005, "window_size": 100, "stat_size": 30}
    limits: ClassVar[dict[str, Limit]] = {
        **DRIFT_LIMITS, "alpha": PROBABILITY, "window_size": Limit(2), "stat_size": AT_LEAST_ONE}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        super().check_params(params)
        window, stat = ({**cls.defaults, **params}[key] for key in ("window_size", "stat_size"))
        if stat >= window:
            raise DetectorParamsError(f"params.stat_size: expected fewer than window_size ({window}) (got {stat})")

    def _new_model(self) -> Any:
        return drift.KSWIN(
            alpha=self.param("alpha"),
            window_size=self.param("window_size"),
            stat_size=self.param("stat_size"),
            seed=self.seed,
        )

    _feed = RiverADWIN._feed


@register_detector("HalfSpaceTrees")
class RiverHalfSpaceTrees(RiverDetector, AnomalyDetector):
    """HalfSpaceTrees on standardized, squashed features (the unit box the trees split)."""

    defaults: ClassVar[dict[str, Any]] = {
        **ANOMALY_DEFAULTS,
        "threshold": 0.9,
        "n_trees": 10,
        "height": 6,
        "window_size": 60,
    }
    limits: ClassVar[dict[str, Limit]] = {
        **ANOMALY_LIMITS, "n_trees": AT_LEAST_ONE, "height": TREE_HEIGHT, "window_size": AT_LEAST_ONE}

    def _new_model(self) -> Any:
        return anomaly.HalfSpaceTrees(
            n_trees=self.param("n_trees"),
            height=self.param("height"),
            window_size=self.param("window_size"),
            seed=self.seed,
        )

    def _score_and_learn(
        self, values: dict[str, float], unit: dict[str, float]
    ) -> tuple[float, dict[str, float] | None]:
        model = self.state["model"]
        score = float(model.score_one(unit))
        model.learn_one(unit)
        return score, None


@register_detector("RobustZScore")
class RobustZScore(AnomalyDetector):
    """Rolling median/MAD baseline: the largest robust z-score of the bar's features.

    Scores are squashed to [0, 1) as |z| / (|z| + z_scale) so thresholds compare
    with the tree detectors'; threshold 0.8 with z_scale 2 means |z| >= 8.
    """

    engine: ClassVar[str] = "qraft"
    defaults: ClassVar[dict[str, Any]] = {
        **ANOMALY_DEFAULTS,
        "window_bars": 120,
        "z_scale": 2.0,
    }
    limits: ClassVar[dict[str, Limit]] = {**ANOMALY_LIMITS, "window_bars": Limit(10), "z_scale": POSITIVE}

    @property
    def algorithm(self) -> str:
        return "qraft.RobustZScore"

    @property
    def version(self) -> str:
        return "1"

    def _new_model(self) -> Any:
        return {f: deque(maxlen=int(self.param("window_bars"))) for f in self.features}

    def _score_and_learn(
        self, values: dict[str, float], unit: dict[str, float]
    ) -> tuple[float, dict[str, float] | None]:
        windows = self.state["model"]
        robust_z = {}
        for feature, value in values.items():
            window = windows[feature]
            if len(window) >= 10:
                median = statistics.median(window)
                mad = statistics.median(abs(v - median) for v in window) * 1.4826
                robust_z[feature] = (value - median) / mad if mad > 0 else 0.0
            window.append(value)
        if not robust_z:
            return 0.0, None
        peak = max(abs(z) for z in robust_z.values())
        return peak / (peak + float(self.param("z_scale"))), robust_z


@register_detector("DBSTREAM")
class DBStreamRegimes(RiverDetector):
    """Joint regime jumps: DBSTREAM clusters standardized feature vectors; a bar
    assigned to a cluster whose centre lies `jump_distance` away from the
    current regime's, for `persistence` bars in a row, is a cluster change.
    Cluster births and deaths are reported beside it.
    """

    kind: ClassVar[str] = "cluster_change"
    defaults: ClassVar[dict[str, Any]] = {
        "clustering_threshold": 1.5,
        "fading_factor": 0.01,
        "cleanup_interval": 10,
        "intersection_factor": 0.3,
        "minimum_weight": 1.0,
        "jump_distance": 2.0,
        "persistence": 3,
        "warmup_bars": 60,
        "confidence_scale": 3.0,
    }
    limits: ClassVar[dict[str, Limit]] = {
        "clustering_threshold": POSITIVE, "fading_factor": FRACTION, "cleanup_interval": POSITIVE,
        "intersection_factor": FRACTION, "minimum_weight": NON_NEGATIVE, "jump_distance": POSITIVE,
        "persistence": AT_LEAST_ONE, "warmup_bars": NON_NEGATIVE, "confidence_scale": POSITIVE,
    }

    @property
    def algorithm(self) -> str:
        return "river.DBSTREAM"

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "scaler": preprocessing.StandardScaler(),
            "model": cluster.DBSTREAM(
                clustering_threshold=self.param("clustering_threshold"),
                fading_factor=self.param("fading_factor"),
                cleanup_interval=self.param("cleanup_interval"),
                intersection_factor=self.param("intersection_factor"),
                minimum_weight=self.param("minimum_weight"),
            ),
            "regime": None,
            "candidate": None,
            "candidate_bars": 0,
            "clusters": 0,
            "seen": 0,
        }

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        if any(math.isnan(v) for v in values.values()):
            return None
        state = self.state
        state["scaler"].learn_one(values)
        scaled = state["scaler"].transform_one(values)
        model = state["model"]
        model.learn_one(scaled)
        label = model.predict_one(scaled)
        centre = {f: float(model.centers[label][f]) for f in self.features} if model.centers else scaled
        state["seen"] += 1
        clusters_before, state["clusters"] = state["clusters"], int(model.n_clusters)
        if state["regime"] is None or state["seen"] <= int(self.param("warmup_bars")):
            state["regime"] = centre
            return None
        jump = _distance(centre, state["regime"])
        if jump < float(self.param("jump_distance")):
            state["regime"], state["candidate"], state["candidate_bars"] = centre, None, 0
            return None
        near_candidate = state["candidate"] is not None and _distance(centre, state["candidate"]) < float(
            self.param("jump_distance")
        )
        state["candidate"] = centre
        state["candidate_bars"] = state["candidate_bars"] + 1 if near_candidate else 1
        if state["candidate_bars"] < int(self.param("persistence")):
            return None
        previous, state["regime"], state["candidate"], state["candidate_bars"] = state["regime"], centre, None, 0
        return self.signal(
            time,
            jump,
            confidence_of(jump, float(self.param("confidence_scale"))),
            {f: centre[f] - previous[f] for f in self.features},
            "regime centre (sd): " + _describe(previous),
            "regime centre (sd): " + _describe(centre)
            + (f"; clusters {clusters_before} → {state['clusters']}" if clusters_before != state["clusters"] else ""),
            lag_bars=int(self.param("persistence")) - 1,
            extra={"clusters_before": float(clusters_before), "clusters_after": float(state["clusters"])},
        )


def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    return math.sqrt(sum((a[k] - b[k]) ** 2 for k in a))


def _describe(centre: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:+.2f}" for k, v in centre.items())
