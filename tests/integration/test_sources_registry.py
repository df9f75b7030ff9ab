"""Governance rows and live status of sources, on a real embedded ClickHouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from qraft_core.config import SourceConfig
from qraft_core.sources_registry import source_status, upsert_sources

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SOURCES = [
    SourceConfig(name="trades", type="websocket", parser="binance_trade", owner="markets",
                 sensitivity="public", retention_days=7),
    SourceConfig(name="news", type="rest", owner="research", options={"event_type": "headline",
                                                                       "required": ["id"]}),
    SourceConfig(name="legacy", type="database", enabled=False, options={"table": "t"}),
]


def raw_rows(source: str, times: list[datetime]) -> pl.DataFrame:
    return pl.DataFrame({
        "event_id": [f"{source}:{i}" for i in range(len(times))], "source": [source] * len(times),
        "type": ["trade"] * len(times), "timestamp": times, "ingest_time": times, "landed_at": times,
        "payload": ["{}"] * len(times), "parser_version": ["p"] * len(times),
        "raw_checksum": [""] * len(times),
    })


def test_registry_upsert_replaces_rows_and_status_reports_rate_last_time_and_errors(chdb_store: Any) -> None:
    upsert_sources(chdb_store, SOURCES, now=NOW - timedelta(hours=1))
    upsert_sources(chdb_store, SOURCES[:2], {"trades": "running", "news": "failing"}, now=NOW)
    registry = chdb_store.select("source_registry", order_by=["name"])
    assert registry["name"].to_list() == ["legacy", "news", "trades"]
    assert registry["status"].to_list() == ["configured", "failing", "running"]
    news = registry.row(1, named=True)
    assert (news["owner"], news["retention_days"], news["sensitivity"]) == ("research", 30, "internal")
    assert json.loads(news["schema"]) == {"parser": "generic", "event_type": "headline", "required": ["id"]}

    # 600 trades in the last five minutes (+1 older), 3 headlines long ago.
    recent = [NOW - timedelta(seconds=300) + timedelta(milliseconds=500 * i) for i in range(600)]
    chdb_store.insert("raw_events", raw_rows("trades", [NOW - timedelta(hours=2), *recent]))
    chdb_store.insert("raw_events", raw_rows("news", [NOW - timedelta(days=1, minutes=m) for m in range(3)]))
    chdb_store.insert("dead_letters", pl.DataFrame({
        "letter_id": ["l1", "l2"], "stage": ["land", "land"], "source": ["news", "news"],
        "reason": ["bad", "bad"], "raw": ["x", "y"], "event_id": ["", ""], "event_time": [None, None],
        "window_start": [None, None], "received_at": [NOW, NOW],
    }))

    rows = {row["name"]: row for row in source_status(chdb_store, SOURCES, now=NOW)}
    assert rows["trades"]["events_per_s"] == 2.0
    assert rows["trades"]["last_event_time"] == "2026-01-05T11:59:59.500000+00:00"
    assert (rows["trades"]["status"], rows["trades"]["errors"]) == ("running", 0)
    assert rows["news"] == {
        "name": "news", "type": "rest", "enabled": True, "owner": "research", "sensitivity": "internal",
        "retention_days": 30, "status": "failing", "last_event_time": "2026-01-04T12:00:00+00:00",
        "events_per_s": 0.0, "errors": 2,
    }
    assert (rows["legacy"]["status"], rows["legacy"]["last_event_time"]) == ("disabled", None)
