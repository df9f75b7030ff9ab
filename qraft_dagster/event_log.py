"""Dagster event log storage that writes a batch of events in one transaction.

A ranged run logs one materialization per window and asset, and one planned materialization
per window and asset when it starts: about 600 events for a run of 60 one-minute windows.
Dagster's SQL storages write each event on its own (two or three connections and transactions,
the asset's row serialized again every time), which cost more than the assets' own work on a
dense replay (and, on SQLite, a commit each). Dagster hands a step's partition events, and a run's planned events, to
`store_event_batch` at once when DAGSTER_EVENT_BATCH_SIZE is set; the OSS storages then still
store them one by one. Here a batch is one transaction, and the asset's row (its latest
materialization, last run) is written once per asset with what the last event of the batch
leaves there, so the stored rows are those of writing the events one by one.

A planned asset check of a ranged run is one row per window of the run; Dagster serializes the
planned event again for every row and sends them as one multi-row statement that SQLAlchemy compiles
for every run. Here the event is serialized once and the rows go in one executemany: the same rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, cast

from dagster import DagsterInstance
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    AssetCheckEvaluationPlanned,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import InMemoryEventLogStorage, SqliteEventLogStorage
from dagster._core.storage.event_log.base import EventLogCursor
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import exc as db_exc
from sqlalchemy.engine import Connection

BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# Larger than any batch Dagster forms for a run (planned events: windows x assets), so a batch
# is never cut in two; Dagster flushes it at its end whatever this number is.
EVENT_BATCH_SIZE = "10000"


def enable_event_batches() -> None:
    """Make Dagster pass batches to the storage (it reads the variable on every event); a value set by
    the operator is kept."""
    os.environ.setdefault(BATCH_SIZE_VARIABLE, EVENT_BATCH_SIZE)


def _is_asset_event(event: EventLogEntry) -> bool:
    return bool(event.dagster_event and event.dagster_event_type in ASSET_EVENTS and event.dagster_event.asset_key)


def _is_check_event(event: EventLogEntry) -> bool:
    return bool(event.dagster_event and event.dagster_event_type in ASSET_CHECK_EVENTS)


def _insert(conn: Connection, row: dict[str, Any]) -> int:
    """Store one event row; its storage id."""
    key = conn.execute(SqlEventLogStorageTable.insert(), row).inserted_primary_key
    assert key is not None
    return int(key[0])


def index_asset_events(
    storage: SqlEventLogStorage, conn: Connection, events: Sequence[EventLogEntry], event_ids: Sequence[int]
) -> None:
    """Asset event tags and the assets' rows for asset events already stored under `event_ids`.

    Each event type sets its own columns of the asset's row, so the last event of each type, applied in
    order, leaves the row as every event applied in order would.
    """
    storage._store_asset_event_tags(conn, events, event_ids)  # noqa: SLF001 - Dagster's own batch-ready step
    by_asset: dict[str, dict[Any, tuple[int, EventLogEntry, int]]] = {}
    for position, (event, event_id) in enumerate(zip(events, event_ids, strict=True)):
        key = event.get_dagster_event().asset_key
        assert key is not None
        by_asset.setdefault(key.to_string(), {})[event.dagster_event_type] = (position, event, event_id)
    has_index_cols = storage._has_asset_key_index_cols_on_connection(conn)  # noqa: SLF001
    for asset_key, last_of_each_type in by_asset.items():
        values: dict[str, Any] = {}
        for _, event, event_id in sorted(last_of_each_type.values(), key=lambda item: item[0]):
            values |= storage._get_asset_entry_values(event, event_id, has_index_cols)  # noqa: SLF001
        if not values:
            continue
        try:
            conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))
        except db_exc.IntegrityError:
            conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key))


class PlannedChecksOnce(SqlEventLogStorage):
    """Stores a planned asset check's rows (one per window of the run) with the event serialized once."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = cast(AssetCheckEvaluationPlanned, event.get_dagster_event().event_specific_data)
        partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(), "check_name": planned.check_name, "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in partitions])


class BatchingInMemoryEventLogStorage(PlannedChecksOnce, InMemoryEventLogStorage):
    """The ephemeral instance's event log (`qraft replay --in-process`, tests), writing batches at once.

    A run plans its range as one event per asset: one per window and asset is what lets the UI show a
    failed run's windows as failed, and no UI reads a throw-away instance. Each window still has its
    own materialization.
    """

    def __init__(self) -> None:
        enable_event_batches()
        super().__init__()

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)
            return
        event_ids = []
        with self.run_connection(events[0].run_id) as conn:
            for event in events:
                event_ids.append(_insert(conn, self._event_to_row(event)))
        assets = [(event, event_id) for event, event_id in zip(events, event_ids, strict=True) if _is_asset_event(event)]
        if assets:
            with self.index_transaction() as conn:
                index_asset_events(self, conn, [event for event, _ in assets], [event_id for _, event_id in assets])
        for event, event_id in zip(events, event_ids, strict=True):
            if _is_check_event(event):
                self.store_asset_check_event(event, event_id)
        self._notify(events)

    def _notify(self, events: Sequence[EventLogEntry]) -> None:
        """What `InMemoryEventLogStorage.store_event` does after storing each event."""
        for event in events:
            self._storage_id += 1
            for handler in list(self._handlers[event.run_id]):
                try:
                    handler(event, str(EventLogCursor.from_storage_id(self._storage_id)))
                except Exception:
                    logging.exception("Exception in callback for event watch on run %s.", event.run_id)


class BatchingSqliteEventLogStorage(PlannedChecksOnce, SqliteEventLogStorage):
    """Dagster's default event log of a persistent instance (one SQLite file per run, asset events
    mirrored in an index file), writing batches at once: one transaction in the run's file, one in
    the index. Configured as Dagster's own, by `base_dir`."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        enable_event_batches()  # every process that opens the instance: the daemon's run workers too
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        assets: list[tuple[EventLogEntry, int]] = []
        checks: list[tuple[EventLogEntry, int]] = []
        with self.index_transaction() as conn:  # the events the index mirrors, in their order
            for event, row in zip(events, rows, strict=True):
                mirrored = (assets if _is_asset_event(event) else checks if _is_check_event(event) else None)
                if mirrored is not None:
                    mirrored.append((event, _insert(conn, row)))
                elif event.dagster_event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS:
                    conn.execute(SqlEventLogStorageTable.insert(), row)
            if assets:
                index_asset_events(self, conn, [event for event, _ in assets], [event_id for _, event_id in assets])
        for event, event_id in checks:
            self.store_asset_check_event(event, event_id)


def ephemeral_instance() -> DagsterInstance:
    """`DagsterInstance.ephemeral()` with the batching event log."""
    from dagster._core.instance.types import InstanceType
    from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher
    from dagster._core.run_coordinator import DefaultRunCoordinator
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
    from dagster._core.storage.root import TemporaryLocalArtifactStorage
    from dagster._core.storage.runs import InMemoryRunStorage

    return DagsterInstance(
        instance_type=InstanceType.EPHEMERAL,
        local_artifact_storage=TemporaryLocalArtifactStorage(),
        run_storage=InMemoryRunStorage(),
        event_storage=BatchingInMemoryEventLogStorage(),
        compute_log_manager=NoOpComputeLogManager(),
        run_coordinator=DefaultRunCoordinator(),
        run_launcher=SyncInMemoryRunLauncher(),
    )
