"""Concept drift on chosen features: the logic every drift detector shares.

An engine supplies the change test (`_new_model`, `_feed`); this class keeps
the recent values to describe what changed, and scores the change as the
shift of the mean in units of the earlier spread.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from datetime import datetime
from typing import Any, ClassVar

from qraft_core.detectors.base import DetectorParamsError, Signal, StreamDetector, confidence_of

DRIFT_DEFAULTS: dict[str, Any] = {
    # Bars kept to describe the state before and after a change.
    "context_bars": 90,
    # Changes reported before this many bars are start-up noise.
    "warmup_bars": 30,
    # The strength (mean shift in spreads) that maps to confidence 0.63.
    "confidence_scale": 2.0,
    # "log" feeds log(max(value, log_floor)): scale-free, and volatility shifts are multiplicative.
    "transform": "none",
    "log_floor": 1e-12,
}
TRANSFORMS = ("none", "log")


class DriftDetector(StreamDetector):
    kind: ClassVar[str] = "concept_drift"

    def _fresh_state(self) -> dict[str, Any]:
        if self.param("transform") not in TRANSFORMS:
            raise DetectorParamsError(
                f"{self.algorithm}: transform must be one of {', '.join(TRANSFORMS)}, got {self.param('transform')!r}"
            )
        return {
            "models": {feature: self._new_model() for feature in self.features},
            "recent": {feature: deque(maxlen=int(self.param("context_bars"))) for feature in self.features},
            "seen": 0,
        }

    def _new_model(self) -> Any:
        raise NotImplementedError

    def _feed(self, model: Any, value: float) -> bool:
        raise NotImplementedError

    def _lag(self, model: Any) -> int | None:
        """Bars since the estimated change point, when the algorithm knows it."""
        return None

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        state = self.state
        state["seen"] += 1
        changed: dict[str, int] = {}
        for feature, value in values.items():
            if math.isnan(value):
                continue
            state["recent"][feature].append(value)
            if self.param("transform") == "log":
                value = math.log(max(value, float(self.param("log_floor"))))
            model = state["models"][feature]
            if self._feed(model, value) and state["seen"] > int(self.param("warmup_bars")):
                changed[feature] = self._lag(model) or 0
        if not changed:
            return None
        return self._describe(time, changed)

    def _describe(self, time: datetime, changed: dict[str, int]) -> Signal | None:
        strengths: dict[str, float] = {}
        before_after: dict[str, tuple[float, float]] = {}
        lags = []
        for feature, lag in changed.items():
            recent = list(self.state["recent"][feature])
            split = min(max(lag, 3), max(len(recent) - 3, 1))
            before, after = recent[:-split], recent[-split:]
            if len(before) < 2:
                continue
            spread = statistics.pstdev(before) or abs(statistics.fmean(before)) * 1e-3 or 1e-12
            mean_before, mean_after = statistics.fmean(before), statistics.fmean(after)
            strengths[feature] = abs(mean_after - mean_before) / spread
            before_after[feature] = (mean_before, mean_after)
            lags.append(split)
        if not strengths:
            return None
        score = max(strengths.values())
        prev = ", ".join(f"{f} ≈ {before_after[f][0]:.6g}" for f in strengths)
        new = ", ".join(f"{f} ≈ {before_after[f][1]:.6g}" for f in strengths)
        return self.signal(
            time,
            score,
            confidence_of(score, float(self.param("confidence_scale"))),
            strengths,
            f"{self.algorithm} window: {prev}",
            f"after change: {new}",
            lag_bars=max(lags),
        )
