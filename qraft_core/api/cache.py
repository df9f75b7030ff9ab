"""Responses reused while the tables they were built from are unchanged.

Pattern pages and cards are costly to build (several store reads, a context
summary, JSON encoding) and change only when a table they read changes. The
store gives a version token per table (`EventStore.table_versions`), read at
most every `check_s` for every cached table at once by a background thread,
so writes by other processes (the pipeline, `qraft patterns annotate`) show
up within `check_s` plus one read of the versions;
a write through this API drops the cached versions at once, so its author
reads it back. Entries also expire after `ttl_s`, whatever the versions say.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from qraft_core.store.base import EventStore, StoreError

log = logging.getLogger(__name__)

# Every table a cached response reads.
CACHED_TABLES = ("pattern_events", "annotations", "clean_events", "pattern_cards")


@dataclass(frozen=True)
class Body:
    content: bytes
    media_type: str


@dataclass(frozen=True)
class _Entry:
    token: tuple[str, ...]
    made_at: float
    body: Body


class ResponseCache:
    def __init__(
        self,
        store: Callable[[], EventStore],
        check_s: float,
        ttl_s: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.check_s = check_s
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._probe = threading.Lock()
        self._versions: dict[str, str] = {}
        self._checked_at = float("-inf")

    def _current_versions(self) -> dict[str, str]:
        """The versions last read; older than `check_s`, they are read again off the request path.

        A request waits for fresh ones only after a write through this API, or when
        `check_s` is 0 (versions read for every request).
        """
        if self._clock() - self._checked_at < self.check_s:
            return self._versions
        if self.check_s <= 0 or self._checked_at == float("-inf"):
            with self._probe:
                if self.check_s <= 0 or self._checked_at == float("-inf"):
                    self._read_versions()
            return self._versions
        current = self._versions
        if self._probe.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="qraft-cache-versions", daemon=True).start()
        return current

    def _read_versions(self) -> None:
        self._versions = self._store().table_versions(CACHED_TABLES)
        self._checked_at = self._clock()

    def _refresh(self) -> None:
        try:
            self._read_versions()
        except StoreError as exc:  # the requests that need the store will report it
            log.debug("could not read table versions: %s", exc)
            self._checked_at = self._clock()
        finally:
            self._probe.release()

    def get(
        self, key: Hashable, tables: Sequence[str], build: Callable[[], tuple[Body, bool]]
    ) -> Body:
        """The cached body of `key`, or `build()`'s (kept when its flag says the body may be reused)."""
        if self.max_bytes <= 0:
            return build()[0]
        versions = self._current_versions()
        token = tuple(versions[table] for table in tables)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.token == token and now - entry.made_at < self.ttl_s:
                self._entries.move_to_end(key)
                return entry.body
        body, reusable = build()
        if reusable and len(body.content) <= self.max_bytes:
            with self._lock:
                replaced = self._entries.pop(key, None)
                if replaced is not None:
                    self._bytes -= len(replaced.body.content)
                self._entries[key] = _Entry(token, now, body)
                self._bytes += len(body.content)
                while self._bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= len(dropped.body.content)
        return body

    def written(self) -> None:
        """This process changed a table: read the versions again before the next answer."""
        with self._probe:
            self._checked_at = float("-inf")
