"""The one contract every detector follows, whatever engine runs it.

A detector watches one stream. `update` takes that stream's feature bars in
time order and returns the signals they raised; `get_state`/`from_state`
carry the online state from one partition to the next, so a backfill that
starts anywhere continues exactly where the previous window stopped.

Following River's conventions: hyperparameters are stored exactly as given
(`params`), every piece of mutable state is created in `reset()` and nowhere
else, and randomness comes only from the seeded generators built there.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar, get_args

import polars as pl

from qraft_core.events import iso, utc
from qraft_core.registry import Registry
from qraft_core.timeutil import parse_iso


@dataclass(frozen=True)
class Signal:
    """One raw finding of one detector on one stream at one bar.

    `fields` holds each input field's share of the finding (scores sum to 1);
    `group` separates findings of the same type that are different things
    (the itemset of a frequent pattern, empty otherwise).
    """

    detector: str
    engine: str
    algorithm: str
    version: str
    stream: str
    type: str
    time: datetime
    score: float
    confidence: float
    fields: dict[str, float]
    prev_state: str
    new_state: str
    params: dict[str, Any]
    group: str = ""
    # Bars between the estimated start of the change and the bar that raised it.
    lag_bars: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    # The earliest bar the evidence supports (a drift's estimated change point, a spike's own
    # bar); `time` is the bar at which the detector became sure. None: the same as `time`.
    onset: datetime | None = None

    @property
    def finding_time(self) -> datetime:
        """When the finding happened, whatever bar or window raised it."""
        return self.onset or self.time

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = iso(self.time)
        data["onset"] = iso(self.onset) if self.onset else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signal:
        values = dict(data)
        values["time"] = parse_iso(str(values["time"]))
        values["onset"] = parse_iso(str(values["onset"])) if values.get("onset") else None
        return cls(**values)


def confidence_of(score: float, scale: float) -> float:
    """Map a non-negative strength to (0, 1): `scale` is the strength worth 0.63.

    >>> confidence_of(0.0, 2.0)
    0.0
    >>> round(confidence_of(2.0, 2.0), 3)
    0.632
    """
    return 1.0 - math.exp(-max(score, 0.0) / scale)


def shares(raw: Mapping[str, float]) -> dict[str, float]:
    """Non-negative contributions scaled to sum to 1, rounded for storage.

    >>> shares({"volume": 3.0, "price": 1.0})
    {'volume': 0.75, 'price': 0.25}
    """
    clipped = {k: abs(v) for k, v in raw.items() if math.isfinite(v)}
    total = sum(clipped.values())
    if total <= 0:
        return {k: round(1.0 / len(clipped), 6) for k in clipped} if clipped else {}
    return {k: round(v / total, 6) for k, v in clipped.items()}


def encode_state(state: bytes | dict[str, Any]) -> str:
    """The text stored in `detector_state.state`: a tag, then the zlib-compressed
    pickle (River objects) or JSON (input histories), in base64."""
    if isinstance(state, dict):
        raw, kind = json.dumps(state, sort_keys=True, separators=(",", ":")).encode(), "json"
    else:
        raw, kind = state, "pickle"
    return f"{kind}:" + base64.b64encode(zlib.compress(raw, 1)).decode()


def decode_state(text: str) -> bytes | dict[str, Any]:
    """Inverse of `encode_state`.

    >>> decode_state(encode_state({"n": 1}))
    {'n': 1}
    >>> decode_state(encode_state(b"abc"))
    b'abc'
    """
    kind, _, body = text.partition(":")
    if kind not in ("json", "pickle"):
        raise ValueError(f"unknown detector state encoding {kind!r}")
    raw = zlib.decompress(base64.b64decode(body))
    if kind == "pickle":
        return raw
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def _unpickle(state: bytes) -> dict[str, Any]:
    loaded = pickle.loads(state)  # noqa: S301 - written by Qraft itself into its own store
    if isinstance(loaded, dict) and set(loaded) == {"features", "state"}:
        return loaded
    return {"features": [], "state": loaded}  # stored before the features travelled with it


class DetectorParamsError(ValueError):
    """Parameters a detector does not know, of the wrong kind, or out of range."""


def param_type_problem(given: Any, default: Any) -> str | None:
    """Why `given` cannot stand in for a parameter whose default is `default`, or None.

    >>> param_type_problem("high", 0.9)
    "expected a number like the default 0.9 (got 'high')"
    >>> param_type_problem(60.5, 60), param_type_problem(1, 0.9), param_type_problem("log", "none")
    ('expected a whole number like the default 60 (got 60.5)', None, None)
    """
    if default is None:
        return None
    if isinstance(default, bool):
        ok, kind = isinstance(given, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(given, int) and not isinstance(given, bool), "a whole number"
    elif isinstance(default, float):
        ok = isinstance(given, (int, float)) and not isinstance(given, bool) and math.isfinite(given)
        kind = "a number"
    else:
        ok, kind = isinstance(given, type(default)), f"a {type(default).__name__}"
    return None if ok else f"expected {kind} like the default {default!r} (got {given!r})"


@dataclass(frozen=True)
class Limit:
    """The values a hyperparameter may take: a number between `low` and `high` (each end
    excluded where `open_low` / `open_high`), or one of `choices`. A value outside them would
    only fail later, inside a run (a division by zero, an empty window), or quietly mean nothing.

    >>> Limit(0, open_low=True).problem(-3)
    'expected a number > 0 (got -3)'
    >>> PROBABILITY.problem(1.5), AT_LEAST_ONE.problem(0), Limit(choices=("up", "down")).problem("left")
    ('expected a number > 0 and < 1 (got 1.5)', 'expected a number >= 1 (got 0)', "expected one of up, down (got 'left')")
    >>> PROBABILITY.problem(1e-5) is None
    True
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        if self.choices:
            return None if value in self.choices else f"expected one of {', '.join(self.choices)} (got {value!r})"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the type check names it
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if not (too_low or too_high):
            return None
        bounds = [f"{op} {bound:g}" for op, bound in (
            (">" if self.open_low else ">=", self.low), ("<" if self.open_high else "<=", self.high))
            if bound is not None]
        return f"expected a number {' and '.join(bounds)} (got {value!r})"


POSITIVE = Limit(0, open_low=True)
NON_NEGATIVE = Limit(0)
AT_LEAST_ONE = Limit(1)
PROBABILITY = Limit(0, 1, open_low=True, open_high=True)
# A share or a fading factor: above zero, one included.
FRACTION = Limit(0, 1, open_low=True)


class StreamDetector:
    """Base of every detector: stores the configuration, owns `reset`, pickles its state.

    Subclasses declare `defaults` (every hyperparameter they accept), build
    their mutable state in `_fresh_state()` and read bars in `_update_row`.

    >>> from qraft_core.detectors.river_engine import RobustZScore
    >>> from qraft_core.detectors.synthetic import synthetic_features
    >>> bars = synthetic_features(n_bars=300, seed=2, spikes_at=(250,)).filter(pl.col("stream") != "news")
    >>> detector = RobustZScore("spikes", "binance_spot:BTCUSDT", ["log_return"], {"warmup_bars": 30})
    >>> detector.params, detector.param("window_bars")
    ({'warmup_bars': 30}, 120)
    >>> first = detector.update(bars.head(200))
    >>> saved = detector.get_state()
    >>> later = RobustZScore.from_state(saved, "spikes", "binance_spot:BTCUSDT", ["log_return"],
    ...     {"warmup_bars": 30}).update(bars.tail(100))
    >>> [(s.type, s.time.strftime("%H:%M:%S"), s.fields) for s in later]
    [('anomaly', '00:41:40', {'log_return': 1.0})]
    >>> detector.reset()
    >>> [s.to_json() for s in detector.update(bars.head(200))] == [s.to_json() for s in first]
    True
    """

    # What runs the algorithm (one of ENGINES); set by every concrete detector.
    engine: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # The values each hyperparameter may take, where not every value of its type will do.
    limits: ClassVar[dict[str, Limit]] = {}

    def __init__(
        self,
        name: str,
        stream: str,
        features: Sequence[str],
        params: Mapping[str, Any] | None = None,
        seed: int = 42,
    ) -> None:
        self.name = name
        self.stream = stream
        self.features = list(features)
        self.params = dict(params or {})
        self.seed = seed
        self.check_params(self.params)
        self.state: Any = None
        self.reset()

    # -- configuration ---------------------------------------------------
    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise `DetectorParamsError` naming the first parameter that is unknown, of the wrong
        kind, or outside its `limits`; subclasses add checks that involve several parameters."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise DetectorParamsError(
                f"params: {cls.__name__} does not accept {', '.join(unknown)} "
                f"(accepted: {', '.join(sorted(cls.defaults)) or 'none'})"
            )
        for key, given in params.items():
            problem = param_type_problem(given, cls.defaults[key])
            if problem is None and key in cls.limits:
                problem = cls.limits[key].problem(given)
            if problem:
                raise DetectorParamsError(f"params.{key}: {problem}")

    def param(self, key: str) -> Any:
        return self.params.get(key, self.defaults[key])

    @property
    def effective_params(self) -> dict[str, Any]:
        return {**self.defaults, **self.params, "seed": self.seed}

    @property
    def algorithm(self) -> str:
        return type(self).__name__

    @property
    def version(self) -> str:
        return ""

    # -- state -----------------------------------------------------------
    def reset(self) -> None:
        """Forget everything learned: the one place mutable state is created."""
        self.state = self._fresh_state()

    def _fresh_state(self) -> Any:
        raise NotImplementedError

    def get_state(self) -> bytes | dict[str, Any]:
        # The features travel with the state: globs resolved on the stream's first bars stay fixed.
        return pickle.dumps({"features": self.features, "state": self.state}, protocol=5)

    def set_state(self, state: bytes | dict[str, Any]) -> None:
        if not isinstance(state, bytes):
            raise ValueError(f"{self.algorithm} state must be bytes, got {type(state).__name__}")
        self.state = _unpickle(state)["state"]

    @staticmethod
    def stored_features(state: bytes | dict[str, Any]) -> list[str]:
        """The feature columns a stored state was learned on."""
        stored = state if isinstance(state, dict) else _unpickle(state)
        return list(stored.get("features", []))

    @classmethod
    def from_state(
        cls,
        state: bytes | dict[str, Any],
        name: str,
        stream: str,
        features: Sequence[str],
        params: Mapping[str, Any] | None = None,
        seed: int = 42,
    ) -> StreamDetector:
        detector = cls(name, stream, features, params, seed)
        detector.set_state(state)
        return detector

    # -- reading bars ----------------------------------------------------
    def update(self, rows: pl.DataFrame) -> list[Signal]:
        """Read one stream's bars (time order); returns the signals they raised."""
        signals: list[Signal] = []
        for time, values in self._rows(rows):
            found = self._update_row(time, values)
            if found is not None:
                signals.append(found)
        return signals

    def _rows(self, rows: pl.DataFrame) -> Iterator[tuple[datetime, dict[str, float]]]:
        missing = [f for f in self.features if f not in rows.columns]
        if missing:
            raise ValueError(f"detector {self.name}: bars lack feature columns {', '.join(missing)}")
        # Nulls and non-finite values become NaN, which every detector skips.
        columns = [[_finite(v) for v in rows[f].cast(pl.Float64).to_list()] for f in self.features]
        times = [utc(t) for t in rows["bar_time"].to_list()]
        for index, time in enumerate(times):
            yield time, {f: column[index] for f, column in zip(self.features, columns, strict=True)}

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        raise NotImplementedError

    def signal(
        self,
        time: datetime,
        score: float,
        confidence: float,
        fields: Mapping[str, float],
        prev_state: str,
        new_state: str,
        **more: Any,
    ) -> Signal:
        """A signal of this detector at `time`; ValueError when the score or confidence is not a finite
        number (stored, it would break every later read of the finding)."""
        for name, value in (("score", score), ("confidence", confidence)):
            if not math.isfinite(value):
                raise ValueError(f"detector {self.name}: signal {name} must be a finite number (got {value!r})")
        return Signal(
            detector=self.name,
            engine=self.engine,
            algorithm=self.algorithm,
            version=self.version,
            stream=self.stream,
            type=self.kind,
            time=time,
            score=round(float(score), 6),
            confidence=round(min(max(float(confidence), 0.0), 1.0), 6),
            fields=shares(fields),
            prev_state=prev_state,
            new_state=new_state,
            params=self.effective_params,
            **more,
        )


# The engine is what runs the algorithm: River, CapyMOA (MOA on the JVM), or Qraft's own Python.
# Findings are cross-validated only when two different engines agree.
Engine = Literal["river", "capymoa", "qraft"]
ENGINES: tuple[str, ...] = get_args(Engine)
# Detector classes by `<engine>/<algorithm>`, as detectors.yaml names them.
DETECTORS: Registry[type[StreamDetector]] = Registry("detector")
S = TypeVar("S", bound=type[StreamDetector])


def detector_key(engine: str, algorithm: str) -> str:
    return f"{engine}/{algorithm}"


def register_detector(algorithm: str) -> Callable[[S], S]:
    """Class decorator: `engine: <cls.engine>, algorithm: <algorithm>` in detectors.yaml builds the class.

    The engine is the class's own, so a configuration cannot claim another engine for it.
    """

    def register(cls: S) -> S:
        if cls.engine not in ENGINES:
            raise ValueError(f"{cls.__qualname__}: engine {cls.engine!r} is not one of {', '.join(ENGINES)}")
        DETECTORS.add(detector_key(cls.engine, algorithm), cls)
        return cls

    return register
