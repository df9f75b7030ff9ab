"""Storage: the `EventStore` interface and where the real one is chosen."""

from qraft_core.store.base import EventStore, Filter, StoreError, StoreUnavailable
from qraft_core.store.clickhouse import ClickHouseStore
from qraft_core.store.cluster import StoreLayout


def open_store(
    dsn: str, lock_timeout_s: float = 60.0, migrate: bool = True, layout: StoreLayout | None = None
) -> ClickHouseStore:
    """The configured ClickHouse store, migrated to the latest schema (in `layout`: cluster, TTLs)."""
    store = ClickHouseStore(dsn, lock_timeout_s=lock_timeout_s, layout=layout)
    if migrate:
        store.migrate()
    return store


__all__ = ["ClickHouseStore", "EventStore", "Filter", "StoreError", "StoreUnavailable", "StoreLayout", "open_store"]
