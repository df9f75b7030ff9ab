"""Ingest in the lineage (sources → NATS stream → raw_events) and the clean events made from raw events.

Sources, the stream and the lander run outside Dagster (`qraft up`), so they are declared as
specs; the window sensor records what landed as observations of `raw_events`.
"""

from datetime import datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    PartitionsDefinition,
    asset,
)

from qraft_core.clean import clean_windows
from qraft_core.config import QraftConfig, SourcesFile
from qraft_core.events import iso
from qraft_core.store.base import EventStore, Filter
from qraft_dagster.assets.metadata import (
    add_window_counts,
    counts_by_window,
    run_summary,
    run_windows,
)
from qraft_dagster.checks import CLEAN_CHECKS, clean_check_results
from qraft_dagster.resources import QraftResource

RAW_EVENTS = AssetKey("raw_events")


def ingest_specs(config: QraftConfig, sources: SourcesFile | None) -> list[AssetSpec]:
    """One spec per configured source, the NATS stream they publish to, and `raw_events` the lander fills."""
    source_specs = [
        AssetSpec(["sources", s.name], group_name="ingest", kinds={s.type},
                  description=s.description or f"{s.type} source {s.endpoint}".strip(),
                  metadata={"endpoint": s.endpoint, "parser": s.parser, "enabled": s.enabled, "owner": s.owner})
        for s in (sources.sources if sources else [])
    ]
    stream = AssetSpec(
        ["nats", config.nats.stream], group_name="ingest", kinds={"nats"}, deps=[s.key for s in source_specs],
        description=f"JetStream stream {config.nats.stream} (subjects {config.nats.subject_prefix}.<source>), "
                    "published by the sources (`qraft up` / `qraft ingest`).",
    )
    raw = AssetSpec(
        RAW_EVENTS, group_name="ingest", kinds={"nats", "clickhouse"}, deps=[stream.key],
        description="Events landed from the NATS stream by the long-running `qraft land` consumer; observed "
                    "(counts, lag, dead letters per source) by the window sensor whenever new events land.",
    )
    return [*source_specs, stream, raw]


def observe_raw_events(store: EventStore, since: datetime) -> AssetObservation:
    """What landed in `raw_events` after `since`, per source: events, newest event time, landing lag, and the
    dead letters received meanwhile (only new rows are read, so a tick costs the same on a large table)."""
    new = [Filter("landed_at", ">", since)]
    with store.session():
        events = store.count("raw_events", where=new, group_by="source")
        letters = store.count("dead_letters", where=[Filter("received_at", ">", since)], group_by="source")
        extents = {name: (store.extent("raw_events", "timestamp", [*new, Filter("source", "=", name)]),
                          store.extent("raw_events", "landed_at", [*new, Filter("source", "=", name)]))
                   for name in events}
    metadata: dict[str, object] = {"events": sum(events.values()), "dead_letters": sum(letters.values()),
                                   "landed_after": iso(since)}
    for name in sorted(set(events) | set(letters)):
        metadata[f"{name}/events"] = events.get(name, 0)
        metadata[f"{name}/dead_letters"] = letters.get(name, 0)
        times, landed = extents.get(name, (None, None))
        if times is not None and landed is not None:
            metadata[f"{name}/newest_event"] = iso(times[1])
            # How long after its event time the newest event landed (a file replayed from the past: its age).
            metadata[f"{name}/landing_lag_s"] = round(max((landed[1] - times[1]).total_seconds(), 0.0), 3)
    return AssetObservation(asset_key=RAW_EVENTS, metadata=metadata)


def build_clean_events(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        partitions_def=partitions_def,
        deps=[RAW_EVENTS],
        backfill_policy=BackfillPolicy.single_run(),
        group_name="pipeline",
        kinds={"clickhouse"},
        check_specs=CLEAN_CHECKS,
    )
    def clean_events(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
        """Validated, repaired events per window; rejects go to dead_letters with a reason."""
        rt = qraft.runtime
        interval = rt.config.partitions.interval
        windows = run_windows(context, interval)
        start, end = windows.start, windows.end
        result = clean_windows(rt.store, start, end, interval, rt.config.clean)
        counts = {table: counts_by_window(rt.store, table, start, end, interval)
                  for table in ("raw_events", "clean_events", "dead_letters")}
        add_window_counts(context, windows, counts)
        return MaterializeResult(metadata=run_summary(result.as_metadata(), start, end),
                                 check_results=clean_check_results(counts, windows.keys))

    return clean_events
