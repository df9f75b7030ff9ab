"""Raw events (landed by `qraft land`) and the clean events made from them."""


from dagster import AssetExecutionContext, AssetSpec, BackfillPolicy, MaterializeResult, asset

from qraft_core.clean import clean_windows
from qraft_dagster.assets.metadata import as_metadata, window
from qraft_dagster.partitions import PARTITIONS
from qraft_dagster.resources import QraftResource

raw_events = AssetSpec(
    "raw_events",
    description="Events landed from NATS JetStream (stream QRAFT_RAW) by the long-running `qraft land` consumer.",
    group_name="ingest",
    kinds={"nats", "clickhouse"},
)


@asset(
    partitions_def=PARTITIONS,
    deps=[raw_events],
    backfill_policy=BackfillPolicy.single_run(),
    group_name="pipeline",
    kinds={"clickhouse"},
)
def clean_events(context: AssetExecutionContext, qraft: QraftResource) -> MaterializeResult:
    """Validated, repaired events per window; rejects go to dead_letters with a reason."""
    rt = qraft.runtime
    start, end = window(context)
    result = clean_windows(rt.store, start, end, rt.config.partitions.interval, rt.config.clean)
    return MaterializeResult(metadata=as_metadata(result.as_metadata()))
