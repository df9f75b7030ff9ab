"""Features, detections, pattern events and explanation cards per window."""

from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
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
from qraft_core.store.base import Filter
from qraft_core.tracking import Tracker
from qraft_dagster.assets.metadata import (
    add_partition_metadata,
    add_window_counts,
    counts_by_window,
    findings_table,
    rows_by_window,
    run_summary,
    run_windows,
)
from qraft_dagster.checks import (
    DETECTOR_CHECKS,
    FRESHNESS_CHECKS,
    detector_check_results,
    freshness_check_results,
)
from qraft_dagster.partitions import partition_start, window_of
from qraft_dagster.resources import QraftResource
from qraft_dagster.sensors.windows import LAST_ASSET, RESTART_TAG

FINDING_FIELDS = ["pattern_id", "type", "timestamp", "source_streams", "confidence", "cross_validated"]
NO_FINDINGS = "No findings in this window."


def build_discovery_assets(partitions_def: PartitionsDefinition) -> list[AssetsDefinition]:
    """The assets after clean_events, all on `partitions_def`, each run covering a range in one process."""
    pipeline: dict[str, Any] = {
        "partitions_def": partitions_def,
        "backfill_policy": BackfillPolicy.single_run(),
        "group_name": "pipeline",
    }
    features, detections = _signal_assets(pipeline)
    return [features, detections, *_finding_assets(pipeline, detections)]


def _signal_assets(pipeline: dict[str, Any]) -> tuple[AssetsDefinition, AssetsDefinition]:
    @asset(deps=["clean_events"], kinds={"polars", "clickhouse"}, **pipeline)
    def features(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
        """Bars per stream (OHLCV, VWAP, imbalance, volatility, z-scores, news keywords) from preprocessing.yaml."""
        rt = qraft.runtime
        interval = rt.config.partitions.interval
        windows = run_windows(context, interval)
        start, end = windows.start, windows.end
        result = materialize_features(rt.store, load_preprocessing(rt.config_path), start, end, interval)
        add_window_counts(context, windows, {"bars": counts_by_window(rt.store, "features", start, end, interval)})
        return MaterializeResult(metadata=run_summary(result, start, end))

    # Detector state flows forward in event time (window N restores N-1's snapshot), but this is not
    # declared as a self-dependency: Dagster never runs a self-dependent asset with other assets, so
    # every UI backfill would be two runs (two processes, two JVM starts) instead of one. Order holds
    # without it: a ranged run processes its windows in order, the instance runs one run at a time in
    # request order, and a window whose previous state is missing rebuilds it (DetectorStateMissing).
    @asset(
        deps=[features],
        kinds={"river", "capymoa", "clickhouse"},
        check_specs=DETECTOR_CHECKS,
        **pipeline,
    )
    def detections(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
        """River and CapyMOA detector signals; the next run resumes from the detector state snapshots.

        A missing state for the window before (a run died half-way) is rebuilt from the last
        good snapshot first; the run is then tagged so its pattern events carry `restart`.
        """
        rt = qraft.runtime
        partitions = rt.config.partitions
        windows = run_windows(context, partitions.interval)
        start, end = windows.start, windows.end
        detectors_config = load_detectors(rt.config_path)
        first = partition_start(partitions)

        def run() -> dict[str, Any]:
            return materialize_detections(rt.store, detectors_config, start, end, partitions.interval, first,
                                          Tracker.from_config(rt.config))

        try:
            result = run()
        except DetectorStateMissing as exc:
            context.log.warning(str(exc))
            since = rebuild_detector_state(rt.store, rt.config_path, rt.config, start, first)
            context.instance.add_run_tags(context.run.run_id, {RESTART_TAG: f"rebuilt from {iso(since)}"})
            result = {**run(), "rebuilt_from": iso(since)}
        add_window_counts(context, windows, {"signals": counts_by_window(rt.store, "detections", start, end,
                                                                         partitions.interval)})
        return MaterializeResult(metadata=run_summary(result, start, end),
                                 check_results=detector_check_results(result))

    return features, detections


def _finding_assets(pipeline: dict[str, Any], detections: AssetsDefinition) -> list[AssetsDefinition]:
    @asset(deps=[detections], kinds={"clickhouse"}, **pipeline)
    def pattern_events(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
        """Findings merged across engines (cross-validated), with metric changes measured on clean data."""
        rt = qraft.runtime
        interval = rt.config.partitions.interval
        windows = run_windows(context, interval)
        start, end = windows.start, windows.end
        run = context.instance.get_run_by_id(context.run.run_id)
        restart = run is not None and RESTART_TAG in run.tags
        result = materialize_patterns(rt.store, load_detectors(rt.config_path), start, end, interval, restart=restart,
                                      preprocessing=load_preprocessing(rt.config_path))
        result.pop("top")  # each partition lists its own findings below
        findings = rows_by_window(rt.store, "pattern_events", start, end, interval, FINDING_FIELDS)
        by_key = {}
        for key in windows.keys:
            mine = findings.filter(pl.col("window") == key)
            by_key[key] = {
                "findings": mine.height,
                "cross_validated": int(mine["cross_validated"].sum()) if mine.height else 0,
                "findings_table": findings_table(mine, rt.config.api),
            }
        add_partition_metadata(context, windows, by_key)
        return MaterializeResult(metadata=run_summary(result, start, end))

    @asset(deps=[pattern_events], kinds={"clickhouse"}, check_specs=FRESHNESS_CHECKS, **pipeline)
    def explanation_cards(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
        """Rule-based cards (English and Chinese) for every finding, with context and a replay command."""
        rt = qraft.runtime
        interval = rt.config.partitions.interval
        windows = run_windows(context, interval)
        start, end = windows.start, windows.end
        result = materialize_cards(rt.store, rt.config, load_cards_config(rt.config_path), start, end,
                                   preprocessing=load_preprocessing(rt.config_path))
        result.pop("markdown")  # a preview of the range; each partition shows all its own cards below
        cards = rows_by_window(rt.store, "pattern_cards", start, end, interval, ["pattern_id", "markdown"], [
            Filter("lang", "=", rt.config.explain.language), Filter("mode", "=", "human")])
        by_key = {}
        for key in windows.keys:
            mine = cards.filter(pl.col("window") == key).sort("pattern_id")
            text = "\n\n---\n\n".join(mine["markdown"].to_list()) if mine.height else NO_FINDINGS
            by_key[key] = {"cards": mine.height, "cards_markdown": MetadataValue.md(text)}
        add_partition_metadata(context, windows, by_key)
        done = context.instance.get_materialized_partitions(LAST_ASSET)
        newest_end = max([end, *(window_of(k) + interval for k in done)])
        with rt.store.session():
            landed = rt.store.extent("raw_events", "timestamp")
        checks = freshness_check_results(newest_end, landed[1] if landed else None, interval,
                                         rt.config.partitions.max_windows_per_run)
        return MaterializeResult(metadata=run_summary(result, start, end), check_results=checks)

    return [pattern_events, explanation_cards]
