"""Storage: the `EventStore` interface and where the real one is chosen."""

import os
import threading

from qraft_core.store.base import EventStore, Filter, StoreError, StoreUnavailable
from qraft_core.store.clickhouse import ClickHouseStore
from qraft_core.store.cluster import StoreLayout

_migrated: set[tuple[str, int, str]] = set()
_migrating = threading.Lock()


def _identity(store: ClickHouseStore) -> tuple[str, int, str]:
    """The DSN, the data directory's inode on chDB (a directory removed and made again is new)
    and the layout (a changed retention or cluster setting is migrated again)."""
    layout = repr(store.layout)
    if not store.embedded:
        return store.dsn, 0, layout
    try:
        return store.dsn, os.stat(store.dsn.removeprefix("chdb://")).st_ino, layout
    except FileNotFoundError:
        return store.dsn, -1, layout


def open_store(
    dsn: str,
    lock_timeout_s: float = 60.0,
    migrate: bool = True,
    keep_open_s: float = 0.0,
    layout: StoreLayout | None = None,
) -> ClickHouseStore:
    """The configured ClickHouse store (in `layout`: cluster, TTLs), migrated once per process."""
    store = ClickHouseStore(dsn, lock_timeout_s=lock_timeout_s, keep_open_s=keep_open_s, layout=layout)
    if migrate:
        with _migrating:
            if _identity(store) not in _migrated:
                store.migrate()
                _migrated.add(_identity(store))
    return store


__all__ = ["ClickHouseStore", "EventStore", "Filter", "StoreError", "StoreUnavailable", "StoreLayout", "open_store"]
