"""The API's response cache on a MemoryStore with a hand-driven clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import polars as pl

from qraft_core.api.cache import Body, ResponseCache
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows
from qraft_core.store.fake import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def audit_row() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "pattern_id": ["p"],
            "annotation_id": [str(datetime.now(UTC).timestamp())],
            "label": ["note"],
            "note": [""],
            "author": ["a"],
            "created_at": [datetime(2026, 1, 5, tzinfo=UTC)],
        }
    )


def counting_builder(size: int = 10, reusable: bool = True):  # type: ignore[no-untyped-def]
    built: list[int] = []

    def build() -> tuple[Body, bool]:
        built.append(len(built))
        return Body(bytes(size), "application/json"), reusable

    return built, build


def cache(
    store: MemoryStore, clock: Clock, check_s: float = 1.0, max_bytes: int = 100
) -> ResponseCache:
    return ResponseCache(lambda: store, check_s, ttl_s=60.0, max_bytes=max_bytes, clock=clock)


def test_a_body_is_reused_until_a_table_it_reads_changes_and_the_api_says_so() -> None:
    store, clock = MemoryStore(), Clock()
    responses = cache(store, clock, check_s=3600)
    built, build = counting_builder()
    for _ in range(3):
        responses.get("k", ["annotations"], build)
    assert built == [0]
    store.insert(
        "annotations", audit_row()
    )  # another process's write: not seen before versions are read
    responses.get("k", ["annotations"], build)
    assert built == [0]
    responses.written()  # a write through the API: versions are read again at once
    responses.get("k", ["annotations"], build)
    assert built == [0, 1]
    # A table the body does not read changes nothing.
    store.insert("pattern_events", pattern_rows(example_patterns()[:1]))
    responses.written()
    responses.get("k", ["annotations"], build)
    assert built == [0, 1]


def test_stale_versions_are_read_again_in_the_background() -> None:
    store, clock = MemoryStore(), Clock()
    responses = cache(store, clock, check_s=1.0)
    built, build = counting_builder()
    responses.get("k", ["annotations"], build)
    store.insert("annotations", audit_row())
    clock.now = 2.0
    responses.get(
        "k", ["annotations"], build
    )  # served from the old versions while they are read again
    assert built == [0]
    for _ in range(200):
        if responses._checked_at == 2.0:
            break
        threading.Event().wait(0.01)
    responses.get("k", ["annotations"], build)
    assert built == [0, 1]


def test_entries_expire_and_the_oldest_go_first_when_bytes_run_out() -> None:
    store, clock = MemoryStore(), Clock()
    responses = cache(store, clock, check_s=3600, max_bytes=25)
    built, build = counting_builder(size=10)
    for key in ("a", "b", "c"):  # 30 bytes > 25: "a" is dropped
        responses.get(key, ["annotations"], build)
    responses.get("b", ["annotations"], build)
    responses.get("a", ["annotations"], build)
    assert len(built) == 4
    clock.now = 61.0
    responses.get("a", ["annotations"], build)
    assert len(built) == 5


def test_bodies_marked_not_reusable_or_too_big_are_not_kept_and_zero_bytes_turns_caching_off() -> (
    None
):
    store, clock = MemoryStore(), Clock()
    built, not_kept = counting_builder(reusable=False)
    responses = cache(store, clock)
    responses.get("k", ["annotations"], not_kept)
    responses.get("k", ["annotations"], not_kept)
    big_built, big = counting_builder(size=500)
    responses.get("big", ["annotations"], big)
    responses.get("big", ["annotations"], big)
    off_built, small = counting_builder()
    off = cache(store, clock, max_bytes=0)
    off.get("k", ["annotations"], small)
    off.get("k", ["annotations"], small)
    assert (len(built), len(big_built), len(off_built)) == (2, 2, 2)
