"""The batching event logs store what Dagster's own storages store, event by event, for ranged runs
(the ephemeral instance, and the SQLite files of a persistent one)."""

import os
from datetime import UTC, datetime

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    TimeWindowPartitionsDefinition,
    asset,
    define_asset_job,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from qraft_core.config import DagsterConfig
from qraft_dagster.event_log import BATCH_SIZE_VARIABLE, ephemeral_instance
from qraft_dagster.instance import write_instance_settings

PARTITIONS = TimeWindowPartitionsDefinition(cron_schedule="* * * * *", start=datetime(2026, 1, 5, tzinfo=UTC),
                                            end=datetime(2026, 1, 5, 0, 10, tzinfo=UTC), fmt="%Y-%m-%d-%H:%M")
RANGED = {"partitions_def": PARTITIONS, "backfill_policy": BackfillPolicy.single_run()}


@asset(check_specs=[AssetCheckSpec("positive", asset="upstream")], **RANGED)
def upstream(context: AssetExecutionContext) -> MaterializeResult:
    for key in context.partition_keys:
        context.add_asset_metadata({"minute": int(key[-2:])}, partition_key=key)
    return MaterializeResult(metadata={"windows": len(context.partition_keys)},
                             check_results=[AssetCheckResult(check_name="positive", passed=True)])


@asset(deps=[upstream], **RANGED)
def downstream(context: AssetExecutionContext) -> MaterializeResult:
    return MaterializeResult(metadata={"first": context.partition_keys[0]})


JOB = Definitions(assets=[upstream, downstream], jobs=[define_asset_job("both", [upstream, downstream])]
                  ).resolve_job_def("both")


def _ranges(instance: DagsterInstance) -> list[str]:
    """Two ranged runs, the second over windows the first already materialized; returns the run ids."""
    runs = []
    for first, last in (("2026-01-05-00:00", "2026-01-05-00:03"), ("2026-01-05-00:02", "2026-01-05-00:06")):
        result = JOB.execute_in_process(instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: first,
                                                                 ASSET_PARTITION_RANGE_END_TAG: last})
        assert result.success
        runs.append(result.run_id)
    return runs


def _planned_windows(planned) -> list[str]:
    """The windows a planned materialization event names: its partition, or its run's range."""
    return [planned.partition] if planned.partition else sorted(planned.partitions_subset.get_partition_keys())


def _stored(instance: DagsterInstance, runs: list[str]) -> dict:
    """Everything the UI reads about the assets, with run ids replaced by their order and storage ids by
    their order among the records read."""
    order = {run_id: n for n, run_id in enumerate(runs)}
    view: dict = {}
    for name in ("upstream", "downstream"):
        key = AssetKey(name)
        records = instance.fetch_materializations(key, limit=100).records
        view[name] = {
            "materializations": sorted((order[r.run_id], r.partition_key,
                                        {k: v.value for k, v in r.asset_materialization.metadata.items()})
                                       for r in records),
            "partitions": sorted(instance.get_materialized_partitions(key)),
            "planned": sorted((order[e.run_id], _planned_windows(e.dagster_event.event_specific_data))
                              for run_id in runs for e in instance.all_logs(
                                  run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
                              if e.dagster_event.asset_key == key),
        }
        entry = instance.get_asset_records([key])[0].asset_entry
        latest = entry.last_materialization_record
        assert latest is not None
        view[name]["latest"] = (order[latest.run_id], latest.partition_key,
                                latest.storage_id == max(r.storage_id for r in records),
                                order[entry.last_run_id] if entry.last_run_id else None)
    checks = instance.event_log_storage.get_asset_check_execution_history(
        next(iter(JOB.asset_layer.asset_graph.asset_check_keys)), limit=100)
    view["checks"] = sorted((order[c.run_id], c.partition or "", c.status.value,
                             c.event.dagster_event_type if c.event else None) for c in checks)
    view["run_events"] = [[event.dagster_event_type for event in instance.all_logs(run_id)
                           if event.dagster_event_type] for run_id in runs]
    return view


@pytest.fixture
def batches(monkeypatch):
    """No batches until a batching storage asks for them, and none after the test."""
    monkeypatch.setenv(BATCH_SIZE_VARIABLE, "0")  # recorded, so the variable is restored afterwards
    monkeypatch.delenv(BATCH_SIZE_VARIABLE)


def _sqlite_instances(tmp_path) -> tuple[DagsterInstance, DagsterInstance]:
    """Dagster's default SQLite instance and the one Qraft's dagster.yaml declares."""
    default, qraft = tmp_path / "default", tmp_path / "qraft"
    default.mkdir()
    (default / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    write_instance_settings(qraft, DagsterConfig())
    return DagsterInstance.from_config(str(default)), DagsterInstance.from_config(str(qraft))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_batches_store_what_event_by_event_stores(batches, storage, tmp_path, monkeypatch):
    if storage == "memory":
        dagster_own, batching = DagsterInstance.ephemeral(), ephemeral_instance()
    else:
        dagster_own, batching = _sqlite_instances(tmp_path)
    assert type(batching.event_log_storage).__name__.startswith("Batching")
    assert os.environ[BATCH_SIZE_VARIABLE]  # Dagster forms batches only then
    stored = _stored(batching, _ranges(batching))
    monkeypatch.delenv(BATCH_SIZE_VARIABLE)
    if storage == "memory":  # the throw-away instance plans a run's range as one event per asset
        monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    expected = _stored(dagster_own, _ranges(dagster_own))

    assert stored == expected
    planned_per_run = {"memory": [[["2026-01-05-00:00", "2026-01-05-00:01", "2026-01-05-00:02", "2026-01-05-00:03"]],
                                  [["2026-01-05-00:02", "2026-01-05-00:03", "2026-01-05-00:04", "2026-01-05-00:05",
                                    "2026-01-05-00:06"]]],
                       "sqlite": [[[f"2026-01-05-00:0{m}"] for m in range(4)],
                                  [[f"2026-01-05-00:0{m}"] for m in range(2, 7)]]}[storage]
    assert [[windows for run, windows in stored["downstream"]["planned"] if run == n] for n in (0, 1)] \
        == planned_per_run
    assert stored["upstream"]["partitions"] == [f"2026-01-05-00:0{m}" for m in range(7)]
    assert [m[1:] for m in stored["upstream"]["materializations"][:2]] == [
        ("2026-01-05-00:00", {"minute": 0, "windows": 4}), ("2026-01-05-00:01", {"minute": 1, "windows": 4})]
    assert stored["upstream"]["latest"] == (1, "2026-01-05-00:06", True, 1)
    # A row per window planned, one result per run (not per window), stored apart from the planned rows.
    planned, evaluated = DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION
    assert stored["checks"] == [
        (0, "", "SUCCEEDED", evaluated), *[(0, f"2026-01-05-00:0{m}", "PLANNED", planned) for m in range(4)],
        (1, "", "SUCCEEDED", evaluated), *[(1, f"2026-01-05-00:0{m}", "PLANNED", planned) for m in range(2, 7)]]
