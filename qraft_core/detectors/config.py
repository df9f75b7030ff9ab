"""`config/detectors.yaml`: which detectors run, on which streams and features.

>>> cfg = DetectorsConfig.model_validate({"detectors": [{"name": "vol_adwin", "engine": "river",
...     "algorithm": "ADWIN", "kind": "concept_drift", "features": ["realized_vol"],
...     "streams": ["binance_spot:*"]}]})
>>> [d.name for d in cfg.for_stream("binance_spot:BTCUSDT")], cfg.for_stream("news")
(['vol_adwin'], [])
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from qraft_core.config import ConfigError, Strict, config_dir, parse_model, read_yaml
from qraft_core.detectors import calibrated, capymoa_engine, river_engine  # noqa: F401  (they register)
from qraft_core.detectors.base import (
    DETECTORS,
    DetectorParamsError,
    Engine,
    StreamDetector,
    detector_key,
)
from qraft_core.detectors.itemsets import FrequentItemsets
from qraft_core.events import PatternType

# Characters that make a feature name a glob over the stream's feature columns.
GLOB_CHARS = frozenset("*?[")
# Bar columns that are never features.
NOT_FEATURES = frozenset({"bar_time", "stream", "window_start", "source"})


class DetectorSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    engine: Engine
    algorithm: str
    kind: PatternType
    features: list[str] = Field(default_factory=list)
    # Glob patterns over stream names, e.g. "binance_spot:*".
    streams: list[str] = Field(default_factory=lambda: ["*"])
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    enabled: bool = True

    @property
    def detector_class(self) -> type[StreamDetector]:
        return DETECTORS[detector_key(self.engine, self.algorithm)]

    @property
    def config_hash(self) -> str:
        """Changes whenever anything that shapes the detector's state changes."""
        text = json.dumps(self.model_dump(mode="json", exclude={"enabled"}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, stream: str) -> bool:
        # A name is itself before it is a glob: `cpu[1]` names the stream `cpu[1]`.
        return any(stream == pattern or fnmatchcase(stream, pattern) for pattern in self.streams)

    @property
    def has_globs(self) -> bool:
        return any(GLOB_CHARS & set(feature) for feature in self.features)

    def resolve_features(self, columns: list[str]) -> list[str]:
        """The features on a stream with these feature columns: each glob replaced by the
        columns it matches (sorted), names kept as given; duplicates dropped.

        >>> spec = DetectorSpec(name="d", engine="qraft", algorithm="CalibratedDrift", kind="concept_drift",
        ...     features=["*_mean", "event_count"])
        >>> spec.resolve_features(["value_mean", "event_count", "cpu_mean", "value_max"])
        ['cpu_mean', 'value_mean', 'event_count']
        >>> spec.resolve_features(["value_max"])
        ['event_count']
        >>> DetectorSpec(name="d", engine="qraft", algorithm="CalibratedDrift", kind="concept_drift",
        ...     features=["flow [l/s]_mean"]).resolve_features(["flow [l/s]_mean", "flow l_mean"])
        ['flow [l/s]_mean']
        """
        resolved: list[str] = []
        for feature in self.features:
            # A column's own name is never a glob, even with brackets in it (`flow [l/s]_mean`).
            is_glob = bool(GLOB_CHARS & set(feature)) and feature not in columns
            matches = sorted(c for c in columns if fnmatchcase(c, feature)) if is_glob else [feature]
            resolved.extend(m for m in matches if m not in resolved)
        return resolved

    def build(self, stream: str, features: list[str] | None = None) -> StreamDetector:
        chosen = self.features if features is None else features
        return self.detector_class(self.name, stream, chosen, self.params, self.seed)

    def restore(self, stream: str, state: bytes | dict[str, Any]) -> StreamDetector:
        # Globs were resolved on the stream's first bars; the state remembers the result.
        features = self.detector_class.stored_features(state) if self.has_globs else self.features
        return self.detector_class.from_state(state, self.name, stream, features, self.params, self.seed)


class MergeConfig(Strict):
    # Signals of the same stream and type this close together are one finding.
    tolerance_s: float = Field(default=60.0, ge=0)
    # A detector firing again this soon after its last signal repeats the same change.
    cooldown_s: float = Field(default=180.0, ge=0)
    # Bars before and after a finding its metric changes are measured on.
    context_bars: int = Field(default=30, ge=1)


class DetectorsConfig(Strict):
    detectors: list[DetectorSpec] = Field(default_factory=list)
    merge: MergeConfig = MergeConfig()

    @field_validator("detectors")
    @classmethod
    def _unique_and_known(cls, value: list[DetectorSpec]) -> list[DetectorSpec]:
        seen: set[str] = set()
        for spec in value:
            if spec.name in seen:
                raise ValueError(f"detector name {spec.name!r} appears twice")
            seen.add(spec.name)
            if detector_key(spec.engine, spec.algorithm) not in DETECTORS:
                prefix = detector_key(spec.engine, "")
                known = [key.removeprefix(prefix) for key in DETECTORS.names() if key.startswith(prefix)]
                raise ValueError(
                    f"{spec.name}: unknown {spec.engine} algorithm {spec.algorithm!r} (known: {', '.join(known)})"
                )
            detector_class = spec.detector_class
            if detector_class.kind != spec.kind:
                raise ValueError(f"{spec.name}: {spec.algorithm} finds {detector_class.kind}, not {spec.kind}")
            if not spec.features and detector_class is not FrequentItemsets:
                raise ValueError(f"{spec.name}: needs at least one feature")
            try:
                detector_class.check_params(spec.params)
            except DetectorParamsError as exc:
                raise ValueError(f"{spec.name}: {exc}") from None
        return value

    @property
    def enabled(self) -> list[DetectorSpec]:
        return [spec for spec in self.detectors if spec.enabled]

    def for_stream(self, stream: str) -> list[DetectorSpec]:
        return [spec for spec in self.enabled if spec.matches(stream)]


DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")


def load_default_detectors() -> DetectorsConfig:
    """The packaged default detector set for any stream (`qraft_core/detectors/defaults.yaml`)."""
    return parse_model(DetectorsConfig, read_yaml(DEFAULTS_PATH), DEFAULTS_PATH)


def load_detectors(directory: Path | str | None = None) -> DetectorsConfig:
    """`detectors.yaml` of the config folder; ConfigError names file, key and expectation."""
    path = config_dir(directory) / "detectors.yaml"
    config = parse_model(DetectorsConfig, read_yaml(path), path)
    if not config.enabled:
        raise ConfigError(f"{path}: detectors: expected at least one enabled detector")
    return config
