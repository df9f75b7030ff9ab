"""Storage: the `EventStore` interface and where the real one is chosen."""

from qraft_core.store.base import EventStore, Filter, StoreError, StoreUnavailable
from qraft_core.store.clickhouse import ClickHouseStore


def open_store(dsn: str, lock_timeout_s: float = 60.0, migrate: bool = True) -> ClickHouseStore:
    """The configured ClickHouse store, migrated to the latest schema."""
    store = ClickHouseStore(dsn, lock_timeout_s=lock_timeout_s)
    if migrate:
        store.migrate()
    return store


__all__ = ["ClickHouseStore", "EventStore", "Filter", "StoreError", "StoreUnavailable", "open_store"]
