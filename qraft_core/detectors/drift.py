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

from qraft_core.detectors.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    Limit,
    Signal,
    StreamDetector,
    confidence_of,
)

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
DRIFT_LIMITS: dict[str, Limit] = {
    "context_bars": AT_LEAST_ONE, "warmup_bars": NON_NEGATIVE, "confidence_scale": POSITIVE,
    "transform": Limit(choices=TRANSFORMS), "log_floor": POSITIVE,
}


class DriftDetector(StreamDetector):
    kind: ClassVar[str] = "concept_drift"

    limits: ClassVar[dict[str, Limit]] = DRIFT_LIMITS

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "models": {feature: self._new_model() for feature in self.features},
            "recent": {feature: deque(maxlen=int(self.param("context_bars"))) for feature in self.features},
            "seen": 0,
        }

    def _new_model(self) -> Any:
        raise NotImplementedError

    def _feed(self, model: Any, value: float) -> bool:
        raise NotImplementedError

    def _transform(self, value: float) -> float:
        if self.param("transform") == "log":
            return math.log(max(value, float(self.param("log_floor"))))
        return value

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        state = self.state
        state["seen"] += 1
        changed: list[str] = []
        for feature, value in values.items():
            if math.isnan(value):
                continue
            state["recent"][feature].append(value)
            model = state["models"][feature]
            if self._feed(model, self._transform(value)) and state["seen"] > int(self.param("warmup_bars")):
                changed.append(feature)
        if not changed:
            return None
        return self._describe(time, changed)

    def _describe(self, time: datetime, changed: list[str]) -> Signal | None:
        strengths: dict[str, float] = {}
        before_after: dict[str, tuple[float, float]] = {}
        lags = []
        for feature in changed:
            recent = list(self.state["recent"][feature])
            if len(recent) < 6:
                continue
            # Located and scored on the values the test saw; described in the feature's own units.
            seen = [self._transform(v) for v in recent]
            split = change_point(seen)
            spread = statistics.pstdev(seen[:split]) or abs(statistics.fmean(seen[:split])) * 1e-3 or 1e-12
            strengths[feature] = abs(statistics.fmean(seen[split:]) - statistics.fmean(seen[:split])) / spread
            before_after[feature] = (statistics.fmean(recent[:split]), statistics.fmean(recent[split:]))
            after = recent[split:]
            lags.append(len(after))
        if not strengths:
            return None
        score = max(strengths.values())
        lag = max(lags)
        return self.signal(
            time,
            score,
            confidence_of(score, float(self.param("confidence_scale"))),
            strengths,
            ", ".join(f"{f} ≈ {before_after[f][0]:.4g}" for f in strengths) + " (mean before the change)",
            ", ".join(f"{f} ≈ {before_after[f][1]:.4g}" for f in strengths) + f" (mean of the last {lag} bars)",
            lag_bars=lag,
        )


def change_point(values: list[float], margin: int = 3) -> int:
    """Where a list most likely changed its mean: the split maximising the
    standardised difference of the means before and after (binary segmentation).

    >>> change_point([1.0] * 20 + [3.0] * 7)
    20
    """
    n = len(values)
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    best, best_split = -1.0, n // 2
    for split in range(margin, n - margin + 1):
        left = prefix[split] / split
        right = (prefix[n] - prefix[split]) / (n - split)
        weight = math.sqrt(split * (n - split) / n)
        if abs(left - right) * weight > best:
            best, best_split = abs(left - right) * weight, split
    return best_split
