"""The Dagster code location: assets, the pipeline job, its sensor and schedule, resources."""

from dagster import (
    AssetSelection,
    Definitions,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from qraft_core.config import config_dir
from qraft_dagster.assets.discovery import detections, explanation_cards, features, pattern_events
from qraft_dagster.assets.ingest import clean_events, raw_events
from qraft_dagster.resources import QraftResource
from qraft_dagster.sensors.windows import PIPELINE_JOB, build_window_sensor

PIPELINE_ASSETS = [clean_events, features, detections, pattern_events, explanation_cards]


def build_definitions(config_directory: str) -> Definitions:
    pipeline_job = define_asset_job(
        PIPELINE_JOB,
        selection=AssetSelection.assets(*PIPELINE_ASSETS),
        description="clean_events → features → detections → pattern_events → explanation_cards over a window range.",
    )
    return Definitions(
        assets=[raw_events, *PIPELINE_ASSETS],
        jobs=[pipeline_job],
        sensors=[build_window_sensor(pipeline_job)],
        # Off by default: the sensor materializes windows as they close; this is the fixed-clock alternative.
        schedules=[build_schedule_from_partitioned_job(pipeline_job)],
        resources={"qraft": QraftResource(config_dir=config_directory)},
    )


defs = build_definitions(str(config_dir().resolve()))
