"""REST poller pieces: the JSONPath subset, field mapping, Retry-After."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from qraft_core.adapters import rest
from qraft_core.adapters.base import AdapterStats
from qraft_core.adapters.registry import build_adapter
from qraft_core.adapters.rest import RestAdapter, compile_path, retry_after_seconds, select
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

DOC = {"data": [{"s": "A", "px": {"bid": 1, "ask": 2}, "tags": ["x", "y"]},
                {"s": "B", "px": {"bid": 3}, "tags": []}], "meta": {"next page": 2}}


@pytest.mark.parametrize(("path", "expected"), [
    ("$", [DOC]),
    ("$.data[*].s", ["A", "B"]),
    ("$.data[-1].px.bid", [3]),
    ("$.data[*].px.ask", [2]),
    ("$.data[0].px.*", [1, 2]),
    ("$.meta['next page']", [2]),
    ('$["meta"]["next page"]', [2]),
    ("data[5].s", []),
    ("$.data[0].tags[1]", ["y"]),
])
def test_select(path: str, expected: list) -> None:
    assert select(DOC, compile_path(path)) == expected


@pytest.mark.parametrize("bad", ["$.", "$[", "$.a[x]", "$.a..b", "$.a b"])
def test_unsupported_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        compile_path(bad)


def test_fields_map_by_path_and_missing_ones_become_none(tmp_path: Path) -> None:
    source = SourceConfig(name="r", type="rest", endpoint="https://h", options={
        "records": "$.data[*]",
        "fields": {"symbol": "$.s", "bid": "px.bid", "ask": "$.px.ask", "tags": "tags[*]"}})
    adapter = build_adapter(source, tmp_path)
    assert isinstance(adapter, RestAdapter)
    assert [adapter._map(r) for r in adapter._records(DOC)] == [
        {"symbol": "A", "bid": 1, "ask": 2, "tags": ["x", "y"]},
        {"symbol": "B", "bid": 3, "ask": None, "tags": []},
    ]


def test_records_path_reaching_a_list_reads_its_items(tmp_path: Path) -> None:
    source = SourceConfig(name="r", type="rest", endpoint="https://h", options={"records": "$.data"})
    adapter = build_adapter(source, tmp_path)
    assert isinstance(adapter, RestAdapter)
    assert [r["s"] for r in adapter._records(DOC)] == ["A", "B"]


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), ("0", 0.0), ("-5", None), ("-0.5", None), ("Mon, 05 Jan 2026 00:01:00 GMT", 60.0),
    ("Mon, 05 Jan 2026 00:00:00 GMT", 0.0), ("Sun, 04 Jan 2026 23:00:00 GMT", None), ("", None), (None, None),
    ("later", None), ("inf", None),
])
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, datetime(2026, 1, 5, tzinfo=UTC)) == seconds


def test_a_stop_does_not_wait_for_the_request_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = SourceConfig(name="r", type="rest", endpoint="http://h", options={"timeout_s": 600})
    adapter = build_adapter(source, tmp_path)
    assert isinstance(adapter, RestAdapter)
    requests: list[str] = []

    async def hanging_request(client: Any) -> Any:
        requests.append("started")
        try:
            await asyncio.Event().wait()  # a server that never answers within timeout_s
        except asyncio.CancelledError:
            requests.append("cancelled")
            raise

    monkeypatch.setattr(adapter, "_request", hanging_request)

    async def run() -> AdapterStats:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(MemoryBus(), stop))
        while not requests:
            await asyncio.sleep(0)
        stop.set()
        # Far under timeout_s: only a guard against hanging the suite.
        return await asyncio.wait_for(task, 10)

    stats = asyncio.run(run())
    assert requests == ["started", "cancelled"]
    assert (stats.errors, stats.extra["requests"]) == (0, 1)


@pytest.mark.parametrize("retry_after", ["-5", "Sun, 04 Jan 2026 23:00:00 GMT"])
def test_a_broken_retry_after_falls_back_to_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry_after: str
) -> None:
    source = SourceConfig(name="r", type="rest", endpoint="http://h", options={
        "interval_s": 1000, "max_retries": 2, "backoff_initial_s": 8, "backoff_max_s": 8})
    adapter = build_adapter(source, tmp_path)
    assert isinstance(adapter, RestAdapter)
    waits: list[float] = []

    async def busy(client: Any) -> tuple[int, httpx.Headers, bytes]:
        return 503, httpx.Headers({"Retry-After": retry_after}), b"busy"

    async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
        waits.append(seconds)
        return seconds == 1000  # stop after the first poll

    monkeypatch.setattr(adapter, "_request", busy)
    monkeypatch.setattr(rest, "sleep_or_stop", sleep_or_stop)
    stats = asyncio.run(adapter.run(MemoryBus(), asyncio.Event()))
    # Two waits between the three attempts, each of the jittered backoff's [4, 8] s; then the interval.
    assert [4 <= wait <= 8 for wait in waits[:-1]] == [True, True] and waits[-1] == 1000
    assert (stats.errors, stats.extra["requests"]) == (3, 3)
