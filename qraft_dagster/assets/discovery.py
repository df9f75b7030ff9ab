"""Features, detections, pattern events and explanation cards per window."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    TimeWindowPartitionMapping,
    asset,
)

from qraft_core.detectors.config import load_detectors
from qraft_core.detectors.runner import DetectorStateMissing, materialize_detections
from qraft_core.events import iso
from qraft_core.explain.materialize import materialize_cards
from qraft_core.explain.templates import load_cards_config
from qraft_core.features import materialize_features
from qraft_core.healing import rebuild_detector_state
from qraft_core.operators.pipeline import load_preprocessing
from qraft_core.patterns.materialize import materialize_patterns
from qraft_core.tracking import Tracker
from qraft_dagster.assets.ingest import clean_events
from qraft_dagster.assets.metadata import as_metadata, window
from qraft_dagster.partitions import PARTITIONS, partition_start
from qraft_dagster.resources import QraftResource
from qraft_dagster.sensors.windows import RESTART_TAG

PIPELINE = {
    "partitions_def": PARTITIONS,
    "backfill_policy": BackfillPolicy.single_run(),
    "group_name": "pipeline",
}


@asset(deps=[clean_events], kinds={"polars", "clickhouse"}, **PIPELINE)
def features(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
    """Bars per stream (OHLCV, VWAP, imbalance, volatility, z-scores, news keywords) from config/preprocessing.yaml."""
    rt = qraft.runtime
    start, end = window(context)
    result = materialize_features(rt.store, load_preprocessing(rt.config_path), start, end, rt.config.partitions.interval)
    return MaterializeResult(metadata=as_metadata(result))


@asset(
    deps=[
        features,
        # The previous window's detector state: state flows forward in event time.
        AssetDep("detections", partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)),
    ],
    kinds={"river", "capymoa", "clickhouse"},
    **PIPELINE,
)
def detections(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
    """River and CapyMOA detector signals; the next run resumes from the detector state snapshots.

    A missing state for the window before (a run died half-way) is rebuilt from the last
    good snapshot first; the run is then tagged so its pattern events carry `restart`.
    """
    rt = qraft.runtime
    start, end = window(context)
    partitions = rt.config.partitions
    detectors_config = load_detectors(rt.config_path)
    first = partition_start(partitions)

    def run() -> dict[str, object]:
        return materialize_detections(rt.store, detectors_config, start, end, partitions.interval, first,
                                      Tracker.from_config(rt.config))

    try:
        result = run()
    except DetectorStateMissing as exc:
        context.log.warning(str(exc))
        since = rebuild_detector_state(rt.store, rt.config_path, rt.config, start, first)
        context.instance.add_run_tags(context.run.run_id, {RESTART_TAG: f"rebuilt from {iso(since)}"})
        result = {**run(), "rebuilt_from": iso(since)}
    return MaterializeResult(metadata=as_metadata(result))


def _top_table(top: list[dict[str, object]]) -> str:
    if not top:
        return "No findings in these windows."
    columns = list(top[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in top]
    return "\n".join(lines)


@asset(deps=[detections], kinds={"clickhouse"}, **PIPELINE)
def pattern_events(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
    """Findings merged across engines (cross-validated), with metric changes measured on clean data."""
    rt = qraft.runtime
    start, end = window(context)
    run = context.instance.get_run_by_id(context.run.run_id)
    restart = run is not None and RESTART_TAG in run.tags
    result = materialize_patterns(rt.store, load_detectors(rt.config_path), start, end, rt.config.partitions.interval,
                                  restart=restart)
    return MaterializeResult(metadata=as_metadata(result, {"top_findings": _top_table(result["top"])}))


@asset(deps=[pattern_events], kinds={"clickhouse"}, **PIPELINE)
def explanation_cards(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
    """Rule-based cards (English and Chinese) for every finding, with context and a replay command."""
    rt = qraft.runtime
    start, end = window(context)
    result = materialize_cards(rt.store, rt.config, load_cards_config(rt.config_path), start, end)
    markdown = result.pop("markdown")
    cards_md = "\n\n---\n\n".join(markdown) if markdown else "No findings in these windows."
    return MaterializeResult(metadata=as_metadata(result, {"cards": cards_md}))
