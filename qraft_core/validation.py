"""`qraft config validate`: every configuration file checked by the module that uses it."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import polars as pl

from qraft_core.config import (
    ConfigError,
    PartitionsConfig,
    config_dir,
    load_qraft_config,
    load_sources,
)
from qraft_core.detectors.config import GLOB_CHARS, NOT_FEATURES, DetectorSpec, load_detectors
from qraft_core.explain.templates import load_cards_config
from qraft_core.features import EVENT_COLUMNS
from qraft_core.operators.base import OperatorContext, OperatorError
from qraft_core.operators.pipeline import (
    PreprocessingConfig,
    SourcePipeline,
    load_preprocessing,
    run_pipeline,
)
from qraft_core.streams import StreamId


def validate_all(directory: Path | str | None = None) -> list[str]:
    """Check every configuration file; returns the files checked, raises ConfigError on the first bad one."""
    base = config_dir(directory)
    qraft = load_qraft_config(base)
    load_sources(base)
    check_bars_fit_windows(load_preprocessing(base), qraft.partitions, base / "preprocessing.yaml")
    load_detectors(base)
    load_cards_config(base)
    return [str(base / name) for name in ("qraft.yaml", "sources.yaml", "preprocessing.yaml", "detectors.yaml",
                                          "cards.yaml")]


def check_bars_fit_windows(preprocessing: PreprocessingConfig, partitions: PartitionsConfig, path: Path) -> None:
    """Every bar size cuts the windows into whole bars, from the first window on; else every run would
    fail at its features step.

    >>> config = PreprocessingConfig.model_validate({"pipeline_by_source": [
    ...     {"source": "cpu", "bar_seconds": 300, "operators": ["aggregate"]},
    ...     {"source": "disk", "bar_seconds": 7, "operators": ["aggregate"]}]})
    >>> check_bars_fit_windows(config, PartitionsConfig(interval_minutes=60), Path("preprocessing.yaml"))
    Traceback (most recent call last):
    ...
    qraft_core.config.ConfigError: preprocessing.yaml: preprocessing.pipeline_by_source[1].bar_seconds: expected a size that divides the windows of partitions.interval_minutes (60 min = 3600 s) and their start 2026-01-05T00:00:00+00:00 (got 7)
    """
    # The sizes the features step uses (`qraft_core.features`): each source's, the file-wide one without sources.
    sized = [(f"pipeline_by_source[{index}].bar_seconds" if pipeline.bar_seconds else "bar_seconds",
              preprocessing.bar_seconds_of(pipeline)) for index, pipeline in enumerate(preprocessing.pipeline_by_source)]
    window = int(partitions.interval.total_seconds())
    for key, bar in sized or [("bar_seconds", preprocessing.bar_seconds)]:
        if window % bar or int(partitions.start.timestamp()) % bar:
            raise ConfigError(
                f"{path}: preprocessing.{key}: expected a size that divides the windows of partitions.interval_minutes "
                f"({partitions.interval_minutes} min = {window} s) and their start {partitions.start.isoformat()} "
                f"(got {bar})"
            )


def config_warnings(directory: Path | str | None = None) -> list[str]:
    """What looks wrong in a valid configuration but cannot be refused: a detector naming streams or
    features no pipeline of preprocessing.yaml makes (a typo runs nothing, silently). Only what can be
    decided: the keys a `stream_key` splits a source by, and the columns of bar statistics over fields
    found in the data, or categories counted, are known only once data comes.

    Call after `validate_all` (the files are valid).
    """
    base = config_dir(directory)
    preprocessing = load_preprocessing(base)
    columns = pipeline_columns(preprocessing)
    path = base / "detectors.yaml"
    warnings = []
    for index, spec in enumerate(load_detectors(base).detectors):
        if not spec.enabled:
            continue
        where = f"{path}: detectors[{index}] {spec.name}"
        reached = [p for p in preprocessing.pipeline_by_source if any(can_reach(pattern, p) for pattern in spec.streams)]
        for pattern in spec.streams:
            if not any(can_reach(pattern, p) for p in preprocessing.pipeline_by_source):
                warnings.append(f"{where}: streams: {pattern!r} names no stream of preprocessing.yaml "
                                f"(streams: {', '.join(stream_names(preprocessing)) or 'none'})")
        known = [columns[p.source] for p in reached]
        if not known or any(c is None for c in known):
            continue
        features = sorted({c for cols in known for c in cols or []})
        for feature in unknown_features(spec, features):
            problem = "matches no column" if GLOB_CHARS & set(feature) else "is not a column"
            warnings.append(f"{where}: features: {feature!r} {problem} of its streams' bars "
                            f"(columns: {', '.join(features)})")
    return warnings


def stream_names(preprocessing: PreprocessingConfig) -> list[str]:
    """The streams the pipelines make, a split source's as `<source>:<key>`."""
    return [p.source if p.stream_key is None else f"{StreamId.key_prefix(p.source)}<{p.stream_key}>"
            for p in preprocessing.pipeline_by_source]


def can_reach(pattern: str, pipeline: SourcePipeline) -> bool:
    """Whether the stream pattern may name a stream of the pipeline (a glob may reach any key).

    >>> cpu, hosts = SourcePipeline(source="cpu", operators=["aggregate"]), SourcePipeline(
    ...     source="hosts", stream_key="h", operators=["aggregate"])
    >>> [can_reach(p, cpu) for p in ("cpu", "c*", "cpu:a", "disk")]
    [True, True, False, False]
    >>> [can_reach(p, hosts) for p in ("hosts:a", "hosts:*", "h*", "*:a", "hosts", "disk:a")]
    [True, True, True, True, False, False]
    """
    if pipeline.stream_key is None:
        return pattern == pipeline.source or fnmatchcase(pipeline.source, pattern)
    source, separator, _ = pattern.partition(":")
    if separator:
        return source == pipeline.source or fnmatchcase(pipeline.source, source)
    return bool(GLOB_CHARS & set(pattern))  # may match keys ("*USDT"): cannot be decided


def pipeline_columns(preprocessing: PreprocessingConfig) -> dict[str, list[str] | None]:
    """The feature columns of each source's bars, or None where they depend on the data: the chain run
    on no events (its columns without rows)."""
    events = pl.DataFrame(schema={name: pl.Datetime("ms", "UTC") if name == "timestamp" else pl.Utf8
                                  for name in EVENT_COLUMNS})
    bars: dict[str, pl.DataFrame] = {}
    found: dict[str, list[str] | None] = {}
    for pipeline in preprocessing.ordered():
        params = pipeline.aggregate_params()
        try:
            frame = run_pipeline(pipeline, pipeline.build(), events,
                                 OperatorContext(pipeline.source, preprocessing.bar_seconds_of(pipeline), bars))
        except (OperatorError, pl.exceptions.PolarsError):
            found[pipeline.source] = None
            continue
        bars[pipeline.source] = frame
        data_dependent = (params.get("method", "stats") == "stats" and (params.get("fields") is None
                          or params.get("categorical"))) or any(name == "keyword_extract" for name, _ in pipeline.steps())
        found[pipeline.source] = None if data_dependent else [c for c in frame.columns if c not in NOT_FEATURES]
    return found


def unknown_features(spec: DetectorSpec, columns: list[str]) -> list[str]:
    """The detector's features (names and globs) that no column is, or matches."""
    return [f for f in spec.features if f not in columns and not any(fnmatchcase(c, f) for c in columns)]
