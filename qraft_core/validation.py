"""`qraft config validate`: every configuration file checked by the module that uses it."""

from __future__ import annotations

from pathlib import Path

from qraft_core.config import (
    ConfigError,
    PartitionsConfig,
    config_dir,
    load_qraft_config,
    load_sources,
)
from qraft_core.detectors.config import load_detectors
from qraft_core.explain.templates import load_cards_config
from qraft_core.operators.pipeline import PreprocessingConfig, load_preprocessing


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
