"""Detectors run by CapyMOA (MOA on the JVM), behind the common protocol.

CapyMOA is version-locked: another version loads with a warning. Without a
JVM or CapyMOA, `capymoa_available()` says so once in the log and returns
False, and the runner goes on with the other engines.

State: MOA's Java objects do not round-trip through Java serialization from
Python (the deserializer cannot see MOA's class loader), so the state stored
is the detector's own input history since its last rebuild. Restoring
re-feeds that history to fresh, seeded models, which reproduces them exactly.
To keep the history bounded, when it reaches `max_history` inputs the
detector rebuilds itself from its last `keep_history` inputs. A continuous
run and a restored run both rebuild at the same inputs, so they agree.

>>> if capymoa_available():
...     from datetime import UTC, datetime, timedelta
...     import random
...     import polars as pl
...     rng = random.Random(7)
...     t0 = datetime(2026, 1, 5, tzinfo=UTC)
...     bars = pl.DataFrame({"bar_time": [t0 + timedelta(seconds=10 * i) for i in range(400)],
...         "realized_vol": [rng.gauss(1.0 if i < 200 else 3.0, 0.2) for i in range(400)]})
...     found = CapyADWIN("vol_adwin_moa", "binance_spot:BTCUSDT", ["realized_vol"]).update(bars)
...     assert found and found[0].time > t0 + timedelta(seconds=2000)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any, ClassVar

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
    register_detector,
)
from qraft_core.detectors.drift import DRIFT_DEFAULTS, DRIFT_LIMITS, DriftDetector
from qraft_core.events import iso, utc
from qraft_core.fault_signals import remember_jvm_handlers, restore_jvm_handlers

log = logging.getLogger(__name__)

LOCKED_VERSION = "0.15.1"
HISTORY_DEFAULTS: dict[str, Any] = {"max_history": 600, "keep_history": 300}
HISTORY_LIMITS: dict[str, Limit] = {"max_history": Limit(2), "keep_history": AT_LEAST_ONE}


@cache
def capymoa_available() -> bool:
    """Whether CapyMOA and its JVM load; logs the reason once when they do not."""
    try:
        import capymoa

        # Starting the JVM happens on the first import of a Java-backed module.
        import capymoa.drift.detectors  # noqa: F401
    except Exception as exc:  # ImportError, or the JVM failing to start
        log.warning("CapyMOA is unavailable (%s): detectors run without CapyMOA", exc)
        return False
    # chDB would take the JVM's fault handlers each time it opens an engine (see fault_signals).
    if remember_jvm_handlers():
        restore_jvm_handlers()
    if capymoa.__version__ != LOCKED_VERSION:
        log.warning(
            "CapyMOA %s is installed but Qraft is tested with %s; results may differ",
            capymoa.__version__,
            LOCKED_VERSION,
        )
    return True


def capymoa_version() -> str:
    import capymoa

    return str(capymoa.__version__)


class CapyMOADetector(StreamDetector):
    """Keeps the input history that rebuilds the Java models (see the module docstring)."""

    engine: ClassVar[str] = "capymoa"

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        super().check_params(params)
        most, kept = ({**cls.defaults, **params}[key] for key in ("max_history", "keep_history"))
        if kept >= most:  # else every input would rebuild the model
            raise DetectorParamsError(f"params.keep_history: expected fewer than max_history ({most}) (got {kept})")

    @property
    def algorithm(self) -> str:
        return "capymoa." + type(self).__name__.removeprefix("Capy")

    @property
    def version(self) -> str:
        return capymoa_version()

    def reset(self) -> None:
        super().reset()
        # (bar time, inputs) since the last rebuild; times become text only when the state is stored.
        self.history: list[tuple[datetime, list[float]]] = []
        # Inputs seen before the kept history: they still count towards the warm-up.
        self.dropped = 0
        self._max_history, self._keep_history = int(self.param("max_history")), int(self.param("keep_history"))
        self._rebuilding = False

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        self.history.append((time, [values[f] for f in self.features]))
        found = super()._update_row(time, values)  # type: ignore[safe-super]
        if len(self.history) >= self._max_history:
            keep = self._keep_history
            self._rebuild(self.history[-keep:], self.dropped + len(self.history) - keep)
        return found

    def _rebuild(self, history: list[tuple[datetime, list[float]]], dropped: int) -> None:
        self.reset()
        # Re-fed inputs raise no signals (they were reported when first seen): skip describing them.
        self._rebuilding = True
        for time, values in history:
            self._update_row(time, dict(zip(self.features, values, strict=True)))
        self._rebuilding = False
        self.dropped = dropped
        self.state["seen"] += dropped

    def get_state(self) -> dict[str, Any]:
        history = [[iso(t), [None if math.isnan(v) else v for v in vs]] for t, vs in self.history]
        return {"history": history, "dropped": self.dropped, "features": self.features}

    def set_state(self, state: bytes | dict[str, Any]) -> None:
        if not isinstance(state, dict) or "history" not in state:
            raise ValueError(f"{self.algorithm} state must be a dict with the input history")
        history = [
            (utc(datetime.fromisoformat(t.replace("Z", "+00:00"))), [math.nan if v is None else float(v) for v in vs])
            for t, vs in state["history"]
        ]
        self._rebuild(history, int(state.get("dropped", 0)))


class CapyDrift(CapyMOADetector, DriftDetector):
    """MOA change detectors, called directly: one JVM call to feed a value, one to read the verdict."""

    def _fresh_state(self) -> dict[str, Any]:
        # Building a MOA detector parses its options (about 20 ms, more than a rebuild's inputs);
        # a reset one is the same as a new one, so rebuilds reuse the models they have.
        self._spare = list(self.state["models"].values()) if self.state else []
        for model in self._spare:
            model.reset(clean_history=True)
        return super()._fresh_state()

    def _new_model(self) -> Any:
        return self._spare.pop() if self._spare else self._build_model()

    def _build_model(self) -> Any:
        raise NotImplementedError

    def _feed(self, model: Any, value: float) -> bool:
        detector = model.moa_detector
        detector.input(value)
        # A rebuild only restores the model: its verdicts were read when the inputs were first seen.
        return not self._rebuilding and bool(detector.getChange())

    def _describe(self, time: datetime, changed: list[str]) -> Signal | None:
        return None if self._rebuilding else super()._describe(time, changed)


@register_detector("ADWIN")
class CapyADWIN(CapyDrift):
    defaults: ClassVar[dict[str, Any]] = {**DRIFT_DEFAULTS, **HISTORY_DEFAULTS, "delta": 0.002}
    limits: ClassVar[dict[str, Limit]] = {**DRIFT_LIMITS, **HISTORY_LIMITS, "delta": PROBABILITY}

    def _build_model(self) -> Any:
        from capymoa.drift.detectors import ADWIN

        return ADWIN(delta=self.param("delta"))


@register_detector("PageHinkley")
class CapyPageHinkley(CapyDrift):
    defaults: ClassVar[dict[str, Any]] = {
        **DRIFT_DEFAULTS,
        **HISTORY_DEFAULTS,
        "min_n_instances": 30,
        "delta": 0.005,
        "lambda_": 50.0,
        "alpha": 0.9999,
    }
    limits: ClassVar[dict[str, Limit]] = {
        **DRIFT_LIMITS, **HISTORY_LIMITS, "min_n_instances": AT_LEAST_ONE, "delta": NON_NEGATIVE,
        "lambda_": POSITIVE, "alpha": FRACTION,
    }

    def _build_model(self) -> Any:
        from capymoa.drift.detectors import PageHinkley

        return PageHinkley(
            min_n_instances=self.param("min_n_instances"),
            delta=self.param("delta"),
            lambda_=self.param("lambda_"),
            alpha=self.param("alpha"),
        )


@register_detector("CUSUM")
class CapyCUSUM(CapyDrift):
    defaults: ClassVar[dict[str, Any]] = {
        **DRIFT_DEFAULTS,
        **HISTORY_DEFAULTS,
        "min_n_instances": 30,
        "delta": 0.005,
        "lambda_": 50.0,
    }
    limits: ClassVar[dict[str, Limit]] = {
        **DRIFT_LIMITS, **HISTORY_LIMITS, "min_n_instances": AT_LEAST_ONE, "delta": NON_NEGATIVE, "lambda_": POSITIVE,
    }

    def _build_model(self) -> Any:
        from capymoa.drift.detectors import CUSUM

        return CUSUM(
            min_n_instances=self.param("min_n_instances"),
            delta=self.param("delta"),
            lambda_=self.param("lambda_"),
        )


@register_detector("HalfSpaceTrees")
class CapyHalfSpaceTrees(CapyMOADetector, AnomalyDetector):
    """MOA's HSTrees on standardized, squashed features (the unit box the trees split)."""

    defaults: ClassVar[dict[str, Any]] = {
        **ANOMALY_DEFAULTS,
        **HISTORY_DEFAULTS,
        "threshold": 0.9,
        "window_size": 60,
        "number_of_trees": 10,
        "max_depth": 6,
        "size_limit": 0.1,
    }
    limits: ClassVar[dict[str, Limit]] = {
        **ANOMALY_LIMITS, **HISTORY_LIMITS, "window_size": AT_LEAST_ONE, "number_of_trees": AT_LEAST_ONE,
        "max_depth": TREE_HEIGHT, "size_limit": PROBABILITY,
    }

    def _new_model(self) -> Any:
        from capymoa.anomaly import HalfSpaceTrees
        from capymoa.stream import Schema

        self._schema = Schema.from_custom(
            features=[*self.features, "class"], target="class", categories={"class": ["0", "1"]}
        )
        return HalfSpaceTrees(
            self._schema,
            random_seed=self.seed,
            window_size=self.param("window_size"),
            number_of_trees=self.param("number_of_trees"),
            max_depth=self.param("max_depth"),
            size_limit=self.param("size_limit"),
        )

    def _score_and_learn(
        self, values: dict[str, float], unit: dict[str, float]
    ) -> tuple[float, dict[str, float] | None]:
        import numpy as np
        from capymoa.core import LabeledInstance

        instance = LabeledInstance.from_array(self._schema, np.array([unit[f] for f in self.features]), 0)
        model = self.state["model"]
        score = float(model.score_instance(instance))
        model.train(instance)
        return score, None
