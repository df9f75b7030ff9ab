"""Point anomalies on a feature vector: the logic every anomaly detector shares.

An engine supplies `_score_and_learn` (score the bar, then learn it); this
class applies the warm-up and threshold and explains a finding by how far
each feature sits from its running mean, in standard deviations.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar

from qraft_core.detectors.base import (
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Limit,
    Signal,
    StreamDetector,
)

ANOMALY_DEFAULTS: dict[str, Any] = {
    "threshold": 0.8,
    "warmup_bars": 120,
    # Standardized values are squashed into (0, 1) as 0.5 + 0.5 * tanh(z / squash_sd).
    "squash_sd": 4.0,
}
# Scores are squashed into (0, 1): a threshold outside it alarms on every bar or on none.
ANOMALY_LIMITS: dict[str, Limit] = {"threshold": PROBABILITY, "warmup_bars": NON_NEGATIVE, "squash_sd": POSITIVE}
# Half-space trees are complete binary trees: 2**height nodes each (height 30 would not fit in memory).
TREE_HEIGHT = Limit(1, 16)


class RunningMoments:
    """Welford's running mean and variance per feature (plain data, so it pickles small).

    >>> m = RunningMoments()
    >>> for v in (1.0, 2.0, 3.0):
    ...     m.add({"x": v})
    >>> m.z({"x": 5.0})
    {'x': 3.6742346141747673}
    """

    def __init__(self) -> None:
        self.n: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        self.m2: dict[str, float] = {}

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            n = self.n.get(key, 0) + 1
            mean = self.mean.get(key, 0.0)
            delta = value - mean
            mean += delta / n
            self.n[key], self.mean[key] = n, mean
            self.m2[key] = self.m2.get(key, 0.0) + delta * (value - mean)

    def z(self, values: dict[str, float]) -> dict[str, float]:
        out = {}
        for key, value in values.items():
            n = self.n.get(key, 0)
            std = math.sqrt(self.m2[key] / n) if n > 1 else 0.0
            out[key] = (value - self.mean.get(key, value)) / std if std > 0 else 0.0
        return out


class AnomalyDetector(StreamDetector):
    kind: ClassVar[str] = "anomaly"
    limits: ClassVar[dict[str, Limit]] = ANOMALY_LIMITS

    def _fresh_state(self) -> dict[str, Any]:
        return {"model": self._new_model(), "moments": RunningMoments(), "seen": 0}

    def _new_model(self) -> Any:
        raise NotImplementedError

    def _score_and_learn(
        self, values: dict[str, float], unit: dict[str, float]
    ) -> tuple[float, dict[str, float] | None]:
        """The bar's anomaly score, and per-feature contributions if the algorithm has its own.

        `unit` holds the values standardized by their running moments and squashed
        into (0, 1): the same bounded input for every engine's trees.
        """
        raise NotImplementedError

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        if any(math.isnan(v) for v in values.values()):
            return None
        state = self.state
        z = state["moments"].z(values)
        squash = float(self.param("squash_sd"))
        unit = {f: 0.5 + 0.5 * math.tanh(v / squash) for f, v in z.items()}
        score, own_contributions = self._score_and_learn(values, unit)
        state["moments"].add(values)
        state["seen"] += 1
        threshold = float(self.param("threshold"))
        if state["seen"] <= int(self.param("warmup_bars")) or score < threshold:
            return None
        contributions = own_contributions or z
        top = max(contributions, key=lambda f: abs(contributions[f]))
        typical = state["moments"].mean
        return self.signal(
            time,
            score,
            self._confidence(score, threshold),
            contributions,
            "typical: " + ", ".join(f"{f} ≈ {typical[f]:.4g}" for f in values),
            f"observed: {top} = {values[top]:.4g} ({z[top]:+.1f} sd)"
            + "".join(f", {f} = {values[f]:.4g}" for f in values if f != top),
        )

    def _confidence(self, score: float, threshold: float) -> float:
        # Scores live in [0, 1]: the margin above the threshold, scaled to the room left.
        return 0.5 + 0.5 * min((score - threshold) / max(1.0 - threshold, 1e-9), 1.0)
