"""File replay: CSV, JSONL and Parquet into the bus, resuming where it stopped."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.lander import land_batch

JAN5 = datetime(2026, 1, 5, tzinfo=UTC)


def trade(i: int, **changes: Any) -> dict[str, Any]:
    record = {
        "e": "trade",
        "E": 1767571200000 + i * 1000 + 5,
        "s": "BTCUSDT",
        "t": 100 + i,
        "p": f"{42000 + i}.5",
        "q": "0.1",
        "T": 1767571200000 + i * 1000,
        "m": False,
    }
    record.update(changes)
    return record


def jsonl(path: Path, records: list[Any], mode: str = "w") -> Path:
    with path.open(mode) as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def adapter_for(tmp_path: Path, endpoint: Path, parser: str = "generic", **options: Any):  # type: ignore[no-untyped-def]
    source = SourceConfig(name="replay", type="file", endpoint=str(endpoint), parser=parser, options=options)
    return build_adapter(source, tmp_path / "state")


def replay(adapter) -> MemoryBus:  # type: ignore[no-untyped-def]
    bus = MemoryBus()
    asyncio.run(adapter.run(bus, asyncio.Event()))
    return bus


def landed(bus: MemoryBus):  # type: ignore[no-untyped-def]
    """What the lander makes of everything on the bus."""
    return land_batch([(m.subject, m.data) for m in bus.queue])


def test_jsonl_binance_trades_are_published_and_bad_lines_become_dead_letters(tmp_path):
    path = jsonl(tmp_path / "trades.jsonl", [trade(0), "{not json", trade(1), [1, 2], trade(2, s="")])
    adapter = adapter_for(tmp_path, path, "binance_trade")
    batch = landed(replay(adapter))
    assert batch.raw_events["event_id"].to_list() == ["replay:BTCUSDT:100", "replay:BTCUSDT:101"]
    assert batch.raw_events["timestamp"].to_list() == [JAN5, JAN5 + timedelta(seconds=1)]
    assert batch.raw_events["parser_version"].to_list() == ["qraft-parsers/1:binance_trade"] * 2
    assert batch.dead_letters["reason"].to_list() == [
        "adapter: line 2 is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "adapter: line 4 is not a JSON object",
        "adapter: binance trade message lacks field 's'",
    ]
    assert batch.dead_letters["raw"].to_list()[0] == "{not json"
    assert (adapter.stats.published, adapter.stats.dead_lettered, adapter.stats.skipped) == (2, 3, 0)


def test_csv_with_column_mapping_and_required_columns(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text(
        "id,published_at,title,source\n"
        "n1,2026-01-05T00:00:06.079Z,BTC up,Ledger\n"
        "n2,2026-01-05T00:02:14Z,,Chain\n"
        "n3,1767571500000,ETH down,Chain\n"
    )
    adapter = adapter_for(
        tmp_path,
        path,
        id_field="id",
        time_field="published_at",
        event_type="headline",
        rename={"source": "outlet"},
        required=["id", "title"],
    )
    batch = landed(replay(adapter))
    assert batch.raw_events.select("event_id", "type", "timestamp").rows() == [
        ("replay:n1", "headline", JAN5 + timedelta(seconds=6, milliseconds=79)),
        ("replay:n3", "headline", JAN5 + timedelta(minutes=5)),
    ]
    assert json.loads(batch.raw_events["payload"][0]) == {
        "id": "n1",
        "published_at": "2026-01-05T00:00:06.079Z",
        "title": "BTC up",
        "outlet": "Ledger",
    }
    assert batch.dead_letters.select("reason", "raw").rows() == [
        ("adapter: record lacks required field(s): title", "n2,2026-01-05T00:02:14Z,,Chain"),
    ]


def test_parquet_rows_are_published_with_native_types(tmp_path):
    path = tmp_path / "ticks.parquet"
    pl.DataFrame(
        {
            "tick": [1, 2, 3],
            "at": [JAN5, JAN5 + timedelta(seconds=1), JAN5 + timedelta(seconds=2)],
            "price": [1.5, 2.5, 3.5],
        }
    ).write_parquet(path)
    adapter = adapter_for(tmp_path, path, id_field="tick", time_field="at", required=["price"])
    batch = landed(replay(adapter))
    assert batch.raw_events["event_id"].to_list() == ["replay:1", "replay:2", "replay:3"]
    assert batch.raw_events["timestamp"].to_list() == [JAN5 + timedelta(seconds=s) for s in range(3)]
    assert json.loads(batch.raw_events["payload"][2]) == {
        "tick": 3,
        "at": "2026-01-05T00:00:02Z",
        "price": 3.5,
    }
    assert batch.dead_lettered == 0


def test_a_second_run_resumes_and_publishes_only_appended_records(tmp_path):
    path = jsonl(tmp_path / "trades.jsonl", [trade(i) for i in range(5)])
    first = adapter_for(tmp_path, path, "binance_trade", batch_size=2)
    first_bus = replay(first)
    assert first.stats.published == 5
    assert len(first_bus.queue) == 3  # batches of 2, 2 and 1

    again = adapter_for(tmp_path, path, "binance_trade", batch_size=2)
    assert len(replay(again).queue) == 0
    assert (again.stats.published, again.stats.skipped) == (0, 5)

    jsonl(path, [trade(5), trade(6)], mode="a")
    after_append = adapter_for(tmp_path, path, "binance_trade", batch_size=2)
    batch = landed(replay(after_append))
    assert batch.raw_events["event_id"].to_list() == ["replay:BTCUSDT:105", "replay:BTCUSDT:106"]
    assert after_append.stats.skipped == 5


def test_csv_resume_counts_rows_not_lines(tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text('id,timestamp,note\n1,1767571200,"two\nlines"\n2,1767571201,x\n')
    first = adapter_for(tmp_path, path, id_field="id")
    assert landed(replay(first)).raw_events["event_id"].to_list() == ["replay:1", "replay:2"]
    with path.open("a") as handle:
        handle.write("3,1767571202,y\n")
    assert landed(replay(adapter_for(tmp_path, path, id_field="id"))).raw_events["event_id"].to_list() == [
        "replay:3"
    ]


def test_dead_lettered_records_also_advance_the_position(tmp_path):
    path = jsonl(tmp_path / "trades.jsonl", ["{oops", trade(0)])
    replay(adapter_for(tmp_path, path, "binance_trade"))
    again = adapter_for(tmp_path, path, "binance_trade")
    assert len(replay(again).queue) == 0


def test_a_missing_csv_column_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,published_at\nn1,2026-01-05T00:00:00Z\n")
    adapter = adapter_for(
        tmp_path, path, id_field="id", time_field="published_at", required=["id", "headline"]
    )
    with pytest.raises(ConfigError) as caught:
        replay(adapter)
    assert str(caught.value) == f"{path}: missing column(s) headline (columns present: id, published_at)"


def test_a_missing_parquet_column_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "ticks.parquet"
    pl.DataFrame({"at": [JAN5]}).write_parquet(path)
    with pytest.raises(ConfigError) as caught:
        replay(adapter_for(tmp_path, path, time_field="at", required=["price", "size"]))
    assert str(caught.value) == f"{path}: missing column(s) price, size (columns present: at)"


def test_a_missing_file_or_unknown_extension_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^source replay: file .*absent\.csv does not exist$"):
        replay(adapter_for(tmp_path, tmp_path / "absent.csv"))
    odd = tmp_path / "data.txt"
    odd.write_text("{}\n")
    with pytest.raises(ConfigError, match="cannot tell the format from the extension; set options.format"):
        replay(adapter_for(tmp_path, odd))
    assert landed(replay(adapter_for(tmp_path, odd, format="jsonl"))).dead_letters["reason"].to_list() == [
        "adapter: record has no time field 'timestamp'"
    ]


def test_speed_factor_paces_the_replay_but_publishes_everything(tmp_path):
    # Event times one second apart at a million times real speed: pacing without waiting.
    path = jsonl(tmp_path / "trades.jsonl", [trade(i) for i in range(20)] + ["{oops"])
    adapter = adapter_for(tmp_path, path, "binance_trade", speed=1_000_000, batch_size=7)
    batch = landed(replay(adapter))
    assert batch.raw_events["event_id"].to_list() == [f"replay:BTCUSDT:{100 + i}" for i in range(20)]
    assert batch.dead_lettered == 1
    assert (adapter.stats.published, adapter.stats.dead_lettered) == (20, 1)
    assert len(replay(adapter_for(tmp_path, path, "binance_trade", speed=1_000_000)).queue) == 0


def test_a_stop_request_ends_the_replay_at_a_resumable_point(tmp_path):
    path = jsonl(tmp_path / "trades.jsonl", [trade(i) for i in range(4)])
    stopped = asyncio.Event()
    stopped.set()
    adapter = adapter_for(tmp_path, path, "binance_trade")
    bus = MemoryBus()
    asyncio.run(adapter.run(bus, stopped))
    assert len(bus.queue) == 0
    assert landed(replay(adapter_for(tmp_path, path, "binance_trade"))).landed == 4


def test_required_names_after_renaming_are_accepted_for_csv(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,ts,title\nn1,1767571200,BTC up\n")
    adapter = adapter_for(
        tmp_path, path, id_field="id", time_field="ts", rename={"title": "headline"}, required=["headline"]
    )
    assert landed(replay(adapter)).landed == 1


@pytest.mark.parametrize("delimiter", [";", "\t", "|", "auto"])
def test_csv_with_a_byte_order_mark_other_separators_and_rows_of_the_wrong_width(tmp_path, delimiter):
    separator = ";" if delimiter == "auto" else delimiter
    lines = [f"timestamp{separator}value", f"2026-01-05T00:00:00Z{separator}-1.5",
             f"2026-01-05T00:00:01Z{separator}2{separator}extra", "2026-01-05T00:00:02Z",
             f"2026-01-05T00:00:03Z{separator}0"]
    path = tmp_path / "m.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    batch = landed(replay(adapter_for(tmp_path, path, delimiter=delimiter)))
    # The byte order mark is not part of the first column's name; CRLF ends rows.
    assert [json.loads(p) for p in batch.raw_events["payload"]] == [
        {"timestamp": "2026-01-05T00:00:00Z", "value": "-1.5"}, {"timestamp": "2026-01-05T00:00:03Z", "value": "0"}]
    assert batch.dead_letters["reason"].to_list() == [
        "adapter: CSV row 2 has 3 fields, the header 2", "adapter: CSV row 3 has 1 fields, the header 2"]
    assert batch.dead_letters["raw"].to_list() == ["2026-01-05T00:00:01Z,2,extra", "2026-01-05T00:00:02Z"]
