"""Websocket frames → events, dead letters and gap records, without a network."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters import websocket
from qraft_core.adapters.registry import build_adapter
from qraft_core.adapters.websocket import WebSocketAdapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

MS = 1767571200000


def adapter(tmp_path: Path, parser: str = "binance_trade", **options: Any) -> WebSocketAdapter:
    source = SourceConfig(name="ws", type="websocket", endpoint="ws://127.0.0.1:1", parser=parser,
                          options=options)
    built = build_adapter(source, tmp_path)
    assert isinstance(built, WebSocketAdapter)
    return built


def trade(trade_id: int, symbol: str = "BTCUSDT", combined: bool = False) -> str:
    data = {"e": "trade", "E": MS + trade_id, "s": symbol, "t": trade_id, "p": "1.5", "q": "2",
            "T": MS + trade_id}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data} if combined else data)


def published(ws: WebSocketAdapter) -> list[dict[str, Any]]:
    bus = MemoryBus()
    asyncio.run(ws.flush(bus))
    return [json.loads(line) for m in bus.queue for line in m.data.split(b"\n")]


def test_plain_and_combined_frames_give_the_same_stable_event(tmp_path: Path) -> None:
    ws = adapter(tmp_path)
    assert ws.handle_message(trade(7)) and ws.handle_message(trade(7, combined=True).encode())
    first, second = published(ws)
    assert first["event_id"] == second["event_id"] == "ws:BTCUSDT:7"
    assert (first["type"], first["timestamp"], first["payload"]["p"]) == (
        "trade", "2026-01-05T00:00:00.007000Z", "1.5")


def test_aggtrade_and_kline_ids(tmp_path: Path) -> None:
    agg = adapter(tmp_path, "binance_aggtrade")
    agg.handle_message(json.dumps({"e": "aggTrade", "E": MS, "s": "ETHUSDT", "a": 12, "p": "1", "q": "1",
                                   "f": 100, "l": 105, "T": MS}))
    assert [e["event_id"] for e in published(agg)] == ["ws:ETHUSDT:12"]

    klines = adapter(tmp_path, "binance_kline", symbols=["BTCUSDT"], kline_interval="5m")
    assert klines.subscription() == ["btcusdt@kline_5m"]
    candle = {"t": MS, "T": MS + 299_999, "s": "BTCUSDT", "i": "5m", "o": "1", "c": "2", "h": "3", "l": "0.5",
              "v": "10", "x": False}
    klines.handle_message(json.dumps({"e": "kline", "E": MS + 1000, "s": "BTCUSDT", "k": candle}))
    closing = {"e": "kline", "E": MS + 300_000, "s": "BTCUSDT", "k": {**candle, "x": True}}
    klines.handle_message(json.dumps(closing))
    events = published(klines)
    assert [e["event_id"] for e in events] == [
        f"ws:BTCUSDT:5m:{MS}:{MS + 1000}", f"ws:BTCUSDT:5m:{MS}:closed"]
    assert events[1]["type"] == "kline" and events[1]["payload"]["c"] == "2"


def test_subscription_names_follow_the_parser(tmp_path: Path) -> None:
    two = adapter(tmp_path, symbols=["BTCUSDT", "ETHUSDT"])
    assert two.subscription() == ["btcusdt@trade", "ethusdt@trade"]
    assert adapter(tmp_path, "binance_aggtrade", symbols=["BTCUSDT"]).subscription() == ["btcusdt@aggTrade"]
    assert adapter(tmp_path, streams=["!ticker@arr"]).subscription() == ["!ticker@arr"]
    assert adapter(tmp_path).subscription() == []


def test_control_replies_are_skipped_and_bad_frames_become_dead_letters(tmp_path: Path) -> None:
    ws = adapter(tmp_path, symbols=["BTCUSDT"])
    assert [json.loads(ws.subscribe_request() or "")["id"] for _ in range(2)] == [1, 2]
    assert ws.handle_message('{"result": null, "id": 1}') is False
    assert ws.handle_message('{"error": {"code": 2, "msg": "Invalid request"}, "id": 2}') is False
    assert ws.stats.errors == 1
    for frame in ['{"e":"trade","E":176', "[1, 2]", '{"e": "trade", "s": "BTCUSDT", "T": 1}', "\x00\x01"]:
        assert ws.handle_message(frame)
    letters = [r["qraft_dead_letter"] for r in published(ws)]
    assert [(letter["reason"].split(":")[0], letter["raw"]) for letter in letters] == [
        ("frame is not JSON", '{"e":"trade","E":176'),
        ("frame is not a JSON object", "[1, 2]"),
        ("binance trade message lacks field 't'", '{"e": "trade", "s": "BTCUSDT", "T": 1}'),
        ("frame is not JSON", "\x00\x01"),
    ]
    assert all(letter["source"] == "ws" for letter in letters)


def test_a_gap_is_recorded_per_symbol_only_when_ids_were_skipped(tmp_path: Path) -> None:
    ws = adapter(tmp_path)
    for frame in [trade(1), trade(2), trade(50, "ETHUSDT")]:
        ws.handle_message(frame)
    ws.note_disconnect("server closed the stream (code 1001)")
    # Replayed copies and an out-of-order trade pass through; BTC resumes at 3 (no gap), ETH at 53.
    resumed = [trade(2), trade(1), trade(3), trade(53, "ETHUSDT"), trade(54, "ETHUSDT"), trade(52, "ETHUSDT")]
    for frame in resumed:
        ws.handle_message(frame)
    events = published(ws)
    assert [e["event_id"] if e["type"] == "trade" else "gap" for e in events] == [
        "ws:BTCUSDT:1", "ws:BTCUSDT:2", "ws:ETHUSDT:50", "ws:BTCUSDT:2", "ws:BTCUSDT:1", "ws:BTCUSDT:3",
        "gap", "ws:ETHUSDT:53", "ws:ETHUSDT:54", "ws:ETHUSDT:52",
    ]
    gap = events[6]
    assert gap["type"] == "source_gap" and gap["source"] == "ws"
    assert gap["payload"] == {
        "key": "ETHUSDT", "from": "2026-01-05T00:00:00.050Z", "to": "2026-01-05T00:00:00.053Z",
        "last_id": 50, "next_id": 53, "missed_ids": 2, "reason": "server closed the stream (code 1001)",
        "reconnects": 0,
    }
    ws.note_disconnect("again")
    ws.handle_message(trade(55, "ETHUSDT"))
    assert [e["type"] for e in published(ws)] == ["trade"]  # 54 → 55 is contiguous


def test_generic_frames_read_seconds_milliseconds_and_microseconds(tmp_path: Path) -> None:
    ws = adapter(tmp_path, "generic", id_field="id", time_field="ts")
    for i, ts in enumerate([1767571200, 1767571200250, 1767571200500000], start=1):
        ws.handle_message(json.dumps({"id": i, "ts": ts}))
    assert [e["timestamp"] for e in published(ws)] == [
        "2026-01-05T00:00:00Z", "2026-01-05T00:00:00.250000Z", "2026-01-05T00:00:00.500000Z",
    ]


def test_events_are_exactly_what_validation_would_build_and_nan_is_refused(tmp_path: Path) -> None:
    from qraft_core.events import StandardEvent

    ws = adapter(tmp_path)
    ws.handle_message(trade(3))
    event = ws._batch[0]
    assert StandardEvent.model_validate(event.model_dump()) == event
    assert event.meta.parser_version == "qraft-parsers/1:binance_trade" and len(event.meta.raw_checksum) == 64
    ws.handle_message('{"e": "trade", "E": 1, "s": "BTCUSDT", "t": 9, "p": NaN, "T": 1}')
    letters = [r["qraft_dead_letter"]["reason"] for r in published(ws) if "qraft_dead_letter" in r]
    assert letters == ["frame is not JSON: NaN is not a JSON number"]


def test_publishing_updates_the_prometheus_metrics(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    source = SourceConfig(name="ws_metrics", type="websocket", endpoint="ws://127.0.0.1:1",
                          parser="binance_trade")
    ws = build_adapter(source, tmp_path)
    assert isinstance(ws, WebSocketAdapter)

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"source": "ws_metrics", **labels}) or 0.0

    before = sample("qraft_adapter_events_total"), sample("qraft_adapter_errors_total", kind="dead_letter")
    ws.handle_message(trade(1))
    ws.handle_message(trade(2))
    ws.handle_message("garbage")
    published(ws)
    assert sample("qraft_adapter_events_total") - before[0] == 2
    assert sample("qraft_adapter_errors_total", kind="dead_letter") - before[1] == 1
    assert sample("qraft_adapter_lag_seconds") > 0  # ingest time is after the 2026-01-05 trade time
    ws.reconnected(0.5, "test")
    assert sample("qraft_adapter_reconnects_total") == 1


def test_only_a_frame_answering_a_request_sent_is_a_reply_and_look_alikes_are_records(tmp_path: Path) -> None:
    ws = adapter(tmp_path, "generic", symbols=["BTCUSDT"], id_field="id", time_field="ts")
    assert json.loads(ws.subscribe_request() or "") == {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
    frames = ['{"id": 1, "ts": 1767571200, "service": "api", "error": "upstream timeout"}',  # more than a reply
              '{"id": "1", "result": null}',  # not the id sent (a record without a time: a dead letter)
              '{"id": 1, "error": {"code": 2, "msg": "Invalid request"}}',  # the reply
              '{"id": 1, "result": null}',  # id 1 was answered already
              '{"id": 2, "ts": 1767571200, "job": "build", "result": "failed"}']  # never sent
    assert [ws.handle_message(frame) for frame in frames] == [True, True, False, True, True]
    assert ws.stats.errors == 1  # the reply carrying an error
    messages = published(ws)
    assert [m["event_id"] for m in messages if "event_id" in m] == ["ws:1", "ws:2"]
    assert [m["qraft_dead_letter"]["reason"] for m in messages if "qraft_dead_letter" in m] == [
        "record has no time field 'ts'", "record has no time field 'ts'"]


def test_a_source_without_streams_takes_every_frame_as_a_record(tmp_path: Path) -> None:
    ws = adapter(tmp_path, "generic", id_field="id", time_field="ts")
    assert ws.subscribe_request() is None
    frames = ['{"id": 1, "ts": 1767571200, "error": "upstream timeout"}',
              '{"id": 2, "ts": 1767571200, "result": "failed"}']
    assert [ws.handle_message(frame) for frame in frames] == [True, True]
    assert [m["event_id"] for m in published(ws)] == ["ws:1", "ws:2"]


def test_sequence_tracking_keeps_long_keys_as_hashes_and_forgets_the_least_recently_seen(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(websocket, "MAX_TRACKED_KEYS", 3)
    ws = adapter(tmp_path, "generic", id_field="t", time_field="T")
    long_symbol = "S" * 200_000

    def record(symbol: str, record_id: int) -> str:
        return json.dumps({"s": symbol, "t": record_id, "T": MS + record_id})

    for frame in [record("A", 1), record("B", 10), record("A", 2), record(long_symbol, 20), record("C", 30)]:
        assert ws.handle_message(frame)
    # B was seen least recently when C came: forgotten; the 200,000-character key is kept as its hash.
    hashed = websocket.tracked_key(long_symbol)
    assert list(ws._last_seen) == ["A", hashed, "C"]
    assert hashed.startswith("sha256:") and len(hashed) == 71
    ws.note_disconnect("server closed the stream (code 1001)")
    assert ws._gap_check == {"A", hashed, "C"}
    ws.handle_message(record("A", 5))
    gaps = [m["payload"] for m in published(ws) if m.get("type") == "source_gap"]
    assert [(gap["key"], gap["last_id"], gap["next_id"]) for gap in gaps] == [("A", 2, 5)]


@pytest.mark.parametrize(("parser", "before", "after", "gaps"), [
    ("generic", ["0b7c-uuid-a", "f3e1-uuid-b"], ["9a2d-uuid-c"], []),  # no sequence in UUIDs
    ("generic", [10, 20], [30], []),  # sparse ids
    ("generic", [10], [30], []),  # one id tells nothing
    ("generic", [1, 2, 4, 5], [9], []),  # ids skipped without a reconnect: not a sequence
    ("generic", [1, 2], [5], [(2, 5)]),
    ("generic", [1, 2], ["x-5"], []),
    ("binance_trade", [1], [5], [(1, 5)]),  # the format defines the sequence
])
def test_a_gap_is_recorded_only_for_integer_ids_that_form_a_sequence(
    tmp_path: Path, parser: str, before: list[Any], after: list[Any], gaps: list[tuple[int, int]]
) -> None:
    ws = adapter(tmp_path, parser, id_field="t", time_field="T")

    def record(record_id: Any) -> str:
        return json.dumps({"e": "trade", "s": "A", "t": record_id, "T": MS, "E": MS})

    for record_id in before:
        ws.handle_message(record(record_id))
    ws.note_disconnect("server closed the stream (code 1000)")
    for record_id in after:
        ws.handle_message(record(record_id))
    found = [m["payload"] for m in published(ws) if m["type"] == "source_gap"]
    assert [(gap["last_id"], gap["next_id"]) for gap in found] == gaps
