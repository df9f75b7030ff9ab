"""Record parsers: event time by magnitude (never off by 1000x), ids and payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.adapters.parsers import GenericOptions, ParseError, build_parser, parse_time
from qraft_core.events import stable_id

JAN5 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767571200, JAN5),
        (1767571200.25, JAN5 + timedelta(milliseconds=250)),
        (1767571200123, JAN5 + timedelta(milliseconds=123)),
        (1767571200123456, JAN5 + timedelta(microseconds=123456)),
        (1767571200123456000, JAN5 + timedelta(microseconds=123456)),
        # Nanoseconds are rounded to the nearest microsecond.
        (1767571200123456789, JAN5 + timedelta(microseconds=123457)),
        ("1767571200", JAN5),
        ("1767571200123", JAN5 + timedelta(milliseconds=123)),
        (" 1767571200123456 ", JAN5 + timedelta(microseconds=123456)),
        ("2026-01-05T00:00:00.5Z", JAN5 + timedelta(milliseconds=500)),
        ("2026-01-05T01:00:00+01:00", JAN5),
        ("2026-01-05 00:00:00", JAN5),
        (datetime(2026, 1, 5), JAN5),
        (datetime(2026, 1, 5, 9, tzinfo=UTC) + timedelta(hours=-9), JAN5),
    ],
)
def test_parse_time_auto_detects_the_unit(value, expected):
    assert parse_time(value) == expected
    assert parse_time(value).tzinfo is not None


@pytest.mark.parametrize("unit_scale", [1, 1_000, 1_000_000, 1_000_000_000])
def test_the_same_instant_in_every_unit_is_the_same_time(unit_scale):
    # From 1973 (the smallest 12-digit millisecond count) to 2286: the range auto-detection must cover.
    for seconds in (100_000_000, 1_000_000_000, 1_767_571_200, 9_999_999_999):
        assert parse_time(seconds * unit_scale) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            seconds=seconds
        )


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1767571200123, "ms", JAN5 + timedelta(milliseconds=123)),
        (1767571200, "ms", datetime(1970, 1, 21, 10, 59, 31, 200000, tzinfo=UTC)),
        (1767571200, "s", JAN5),
        (1767571200000000, "us", JAN5),
        (1767571200000000000, "ns", JAN5),
        ("1767571200", "s", JAN5),
    ],
)
def test_an_explicit_unit_is_obeyed(value, unit, expected):
    assert parse_time(value, unit) == expected


@pytest.mark.parametrize(
    ("value", "unit", "message"),
    [
        (None, "auto", "timestamp is missing"),
        ("", "auto", "timestamp is missing"),
        (True, "auto", "timestamp True is not a time"),
        (-1, "auto", "timestamp -1 is not a valid epoch time"),
        (float("nan"), "auto", "timestamp nan is not a valid epoch time"),
        ("inf", "auto", "timestamp 'inf' is not a valid epoch time"),
        (1e30, "auto", "timestamp 1e+30 is out of range"),
        ("soon", "auto", "timestamp 'soon' is neither an epoch number nor ISO 8601"),
        ("1767571200", "iso", "timestamp '1767571200' is neither an epoch number nor ISO 8601"),
        ([1], "auto", "timestamp [1] is not a time"),
    ],
)
def test_bad_times_raise_parse_error_with_the_value(value, unit, message):
    with pytest.raises(ParseError) as caught:
        parse_time(value, unit)
    assert str(caught.value) == message


TRADE = {
    "e": "trade",
    "E": 1767571200203,
    "s": "BTCUSDT",
    "t": 4210000000,
    "p": "94987.46",
    "q": "0.01015",
    "T": 1767571200174,
    "m": True,
    "M": True,
}


def test_binance_trade_becomes_an_event_with_the_exchange_id_and_trade_time():
    parse = build_parser("binance_trade", GenericOptions(), "binance_spot")
    parsed = parse(TRADE, "sum")
    assert parsed.event_id == "binance_spot:BTCUSDT:4210000000"
    assert parsed.type == "trade"
    assert parsed.timestamp == JAN5 + timedelta(milliseconds=174)
    assert parsed.payload == TRADE
    assert parsed.payload is not TRADE


def test_binance_combined_stream_wrapper_is_unwrapped():
    parse = build_parser("binance_trade", GenericOptions(), "binance_spot")
    wrapped = {"stream": "btcusdt@trade", "data": TRADE}
    assert parse(wrapped, "sum") == parse(TRADE, "sum")


def test_binance_aggtrade_uses_the_aggregate_id():
    parse = build_parser("binance_aggtrade", GenericOptions(), "spot")
    record = {**TRADE, "e": "aggTrade", "a": 77}
    parsed = parse(record, "sum")
    assert (parsed.event_id, parsed.type) == ("spot:BTCUSDT:77", "aggTrade")


@pytest.mark.parametrize("field", ["s", "t", "T"])
def test_binance_trade_missing_a_key_field_is_a_parse_error(field):
    parse = build_parser("binance_trade", GenericOptions(), "binance_spot")
    with pytest.raises(ParseError) as caught:
        parse({k: v for k, v in TRADE.items() if k != field}, "sum")
    assert str(caught.value) == f"binance trade message lacks field {field!r}"


def test_binance_message_without_an_object_payload_is_a_parse_error():
    parse = build_parser("binance_trade", GenericOptions(), "binance_spot")
    with pytest.raises(ParseError, match="^binance message has no object payload$"):
        parse({"data": [1, 2]}, "sum")


def test_generic_parser_renames_checks_required_fields_and_uses_the_id_field():
    options = GenericOptions(
        id_field="id",
        time_field="published_at",
        event_type="headline",
        rename={"title": "headline"},
        required=["id", "headline"],
    )
    parse = build_parser("generic", options, "news")
    parsed = parse({"id": "n1", "published_at": "2026-01-05T00:00:06.079Z", "title": "BTC up"}, "sum")
    assert parsed.event_id == "news:n1"
    assert parsed.type == "headline"
    assert parsed.timestamp == JAN5 + timedelta(seconds=6, milliseconds=79)
    assert parsed.payload == {"id": "n1", "published_at": "2026-01-05T00:00:06.079Z", "headline": "BTC up"}
    with pytest.raises(ParseError, match=r"^record lacks required field\(s\): headline$"):
        parse({"id": "n2", "published_at": "2026-01-05T00:00:00Z", "title": ""}, "sum")


def test_generic_parser_without_id_field_derives_the_id_from_the_raw_bytes():
    parse = build_parser("generic", GenericOptions(), "sensor")
    parsed = parse({"timestamp": 1767571200, "v": 1}, "c0ffee")
    assert parsed.event_id == stable_id("sensor", "c0ffee")
    assert parsed.type == "record"
    assert parsed.timestamp == JAN5


def test_generic_parser_errors_name_the_missing_time_or_id():
    parse = build_parser("generic", GenericOptions(id_field="id", time_field="at"), "s")
    with pytest.raises(ParseError, match="^record has no time field 'at'$"):
        parse({"id": 1}, "sum")
    with pytest.raises(ParseError, match="^record has no id field 'id'$"):
        parse({"at": 1767571200}, "sum")


def test_generic_parser_honours_a_declared_time_unit():
    parse = build_parser("generic", GenericOptions(time_unit="ms"), "s")
    assert parse({"timestamp": 1767571200}, "sum").timestamp == datetime(
        1970, 1, 21, 10, 59, 31, 200000, tzinfo=UTC
    )
    in_seconds = build_parser("generic", GenericOptions(time_unit="s"), "s")
    with pytest.raises(ParseError, match="^timestamp 1767571200123 is out of range$"):
        in_seconds({"timestamp": 1767571200123}, "sum")


def test_an_unknown_parser_is_named():
    with pytest.raises(ValueError, match=r"^unknown parser 'xml' \(known: .*binance_trade.*generic"):
        build_parser("xml", GenericOptions(), "s")
