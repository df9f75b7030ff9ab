"""Governance rows and live status of sources, on a real embedded ClickHouse."""

from __future__ import annotations

import contextlib
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


def test_cli_sources_list_and_ingest_from_file(
    config_dir: Any, nats_server: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    import asyncio

    from click.testing import CliRunner

    from qraft_cli import main
    from qraft_core.bus.base import StreamSettings
    from qraft_core.bus.nats_bus import NatsBus

    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    replay = tmp_path / "trades.jsonl"
    trades = [{"e": "trade", "E": 1767571200000 + i, "s": "BTCUSDT", "t": i, "p": "1", "q": "1",
               "T": 1767571200000 + i} for i in range(1, 6)]
    replay.write_text("\n".join(json.dumps(t) for t in trades) + "\n{broken\n")
    runner = CliRunner()

    result = runner.invoke(main, ["ingest", "binance_spot", "--from", str(replay), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["source"], summary["type"], summary["published"], summary["dead_lettered"]) == (
        "binance_spot", "file", 5, 1)
    assert summary["last_event_time"] == "2026-01-05T00:00:00.005000+00:00"

    async def read_back() -> list[str]:
        async with NatsBus(nats_server.url, StreamSettings()) as bus:
            await bus.subscribe("cli-test")
            messages = []
            for _ in range(3):  # nats-py sometimes raises a plain TimeoutError that NatsBus.fetch lets out
                with contextlib.suppress(TimeoutError):
                    messages = await bus.fetch(100, 1.0)
                    break
            await bus._sub.unsubscribe()  # a pull subscription left open makes drain() wait 30s
        return [m.subject for m in messages]

    assert set(asyncio.run(read_back())) == {"qraft.raw.binance_spot"}

    listed = runner.invoke(main, ["sources", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows][:2] == ["binance_spot", "news"]
    assert rows[0]["status"] == "configured" and rows[0]["events_per_s"] == 0.0

    unknown = runner.invoke(main, ["ingest", "nope"])
    assert unknown.exit_code == 2 and "unknown source 'nope'" in unknown.output


def test_cli_ingest_runs_a_live_source_for_a_while(
    config_dir: Any, nats_server: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    import yaml
    from click.testing import CliRunner

    from qraft_cli import main

    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    folder = tmp_path / "drop"
    folder.mkdir()
    lines = [json.dumps({"id": i, "ts": 1767571200 + i}) + "\n" for i in range(3)]
    (folder / "a.jsonl").write_text("".join(lines))
    (config_dir / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "drop", "type": "watcher", "endpoint": str(folder),
        "options": {"pattern": "*.jsonl", "id_field": "id", "time_field": "ts", "interval_s": 0.05},
    }]}))
    result = CliRunner().invoke(main, ["ingest", "drop", "--duration", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["type"], summary["published"], summary["last_event_time"]) == (
        "watcher", 3, "2026-01-05T00:00:02+00:00")
