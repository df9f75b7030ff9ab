"""The Dagster code location: assets, the pipeline job, its sensor and schedule, resources."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, build_schedule_from_partitioned_job, define_asset_job

from qraft_core.config import config_dir
from qraft_dagster.assets.ingest import clean_events, raw_events
from qraft_dagster.partitions import PARTITIONS
from qraft_dagster.resources import QraftResource
from qraft_dagster.sensors.windows import PIPELINE_JOB, build_window_sensor

PIPELINE_ASSETS = [clean_events]

pipeline_job = define_asset_job(
    PIPELINE_JOB,
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    partitions_def=PARTITIONS,
    description="clean_events → features → detections → pattern_events → explanation_cards for a window range.",
)

defs = Definitions(
    assets=[raw_events, *PIPELINE_ASSETS],
    jobs=[pipeline_job],
    sensors=[build_window_sensor(pipeline_job)],
    # Off by default: the sensor materializes windows as they close; this is the fixed-clock alternative.
    schedules=[build_schedule_from_partitioned_job(pipeline_job)],
    resources={"qraft": QraftResource(config_dir=str(config_dir()))},
)
