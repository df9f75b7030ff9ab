"""The Dagster code location: assets, the pipeline job, its sensor, schedule and checks, resources.

Built from a configuration object by `build_definitions`; `defs` is the lazily loaded entry
`workspace.yaml` names, so importing this module reads no configuration.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster import (
    AssetSelection,
    Definitions,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from qraft_core.config import QraftConfig, SourcesFile, config_dir, load_qraft_config, load_sources
from qraft_core.redact import install_redaction
from qraft_dagster.assets.discovery import build_discovery_assets
from qraft_dagster.assets.ingest import build_clean_events, ingest_specs
from qraft_dagster.partitions import build_partitions
from qraft_dagster.resources import QraftResource, require_qraft_yaml, share_config
from qraft_dagster.sensors.windows import PIPELINE_JOB, build_window_sensor


def _sources(directory: Path) -> SourcesFile | None:
    """The configured sources for the lineage; a store-only setup (no sources.yaml) has none."""
    return load_sources(directory) if (directory / "sources.yaml").is_file() else None


def build_definitions(
    config_directory: str | Path, config: QraftConfig | None = None, qraft: QraftResource | None = None
) -> Definitions:
    """Definitions for `config` (read from `config_directory`/qraft.yaml when not given).

    `config_directory` also names where detectors, preprocessing and cards are configured;
    `qraft` replaces the resource (e.g. `MemoryQraftResource` for tests without chDB).
    """
    directory = Path(config_directory).resolve()
    if config is None:
        require_qraft_yaml(directory)
        config = load_qraft_config(directory)
    elif qraft is None:
        share_config(directory, config)
    partitions = build_partitions(config.partitions)
    pipeline_assets = [build_clean_events(partitions), *build_discovery_assets(partitions)]
    pipeline_job = define_asset_job(
        PIPELINE_JOB,
        selection=AssetSelection.assets(*pipeline_assets),
        description="clean_events → features → detections → pattern_events → explanation_cards over a window range.",
    )
    return Definitions(
        assets=[*ingest_specs(config, _sources(directory)), *pipeline_assets],
        jobs=[pipeline_job],
        sensors=[build_window_sensor(pipeline_job)],
        # Off by default: the sensor materializes windows as they close; this is the fixed-clock alternative.
        schedules=[build_schedule_from_partitioned_job(pipeline_job)],
        resources={"qraft": qraft or QraftResource(config_dir=str(directory))},
        # One process per run, not per step, for every job: the pipeline job and the asset job behind the UI's
        # "Materialize" and backfills. A run pays the imports and the JVM start once.
        executor=in_process_executor,
    )


@dg.definitions
def defs() -> Definitions:
    """The code location of `workspace.yaml`: the configuration in QRAFT_CONFIG_DIR (default ./config)."""
    # Every Dagster process loads this (code server, run workers, `dagster dev`): their log lines and
    # tracebacks reach the compute logs and the UI, so secrets are masked as in the CLI's.
    install_redaction()
    return build_definitions(config_dir())
