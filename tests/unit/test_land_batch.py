"""land_batch: every line of every message becomes exactly one raw event or one dead letter."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from qraft_core.adapters.base import dead_letter_envelope
from qraft_core.bus.fake import MemoryBus, MemoryMessage
from qraft_core.config import LanderConfig
from qraft_core.events import StandardEvent, checksum, stable_id
from qraft_core.lander import _MEMORY_CHUNKS, Lander, LanderStats, _KnownIds, land_batch
from qraft_core.store.base import StoreError, StoreUnavailable
from qraft_core.store.fake import MemoryStore

NOW = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
SUBJECT = "qraft.raw.binance_spot"


def event_line(event_id: str, /, **changes: Any) -> bytes:
    document: dict[str, Any] = {
        "event_id": event_id,
        "source": "binance_spot",
        "type": "trade",
        "timestamp": "2026-01-05T00:03:17.250Z",
        "ingest_time": "2026-01-05T00:03:17.300Z",
        "payload": {"p": "42000.5", "q": 0.25, "nested": {"b": 2, "a": 1}},
        "meta": {"parser_version": "binance-trade/1", "raw_checksum": "abc"},
    }
    document.update(changes)
    for key in [k for k, v in document.items() if v is None]:
        del document[key]
    return json.dumps(document).encode()


def single(line: bytes, **kwargs: Any) -> dict[str, Any]:
    """The one dead letter a single bad line turns into."""
    batch = land_batch([(SUBJECT, line)], now=NOW, **kwargs)
    assert (batch.landed, batch.dead_lettered) == (0, 1)
    return batch.dead_letters.row(0, named=True)


def test_good_events_become_raw_rows_with_every_column():
    batch = land_batch([(SUBJECT, event_line("t-1") + b"\n" + event_line("t-2"))], now=NOW)
    assert (batch.landed, batch.dead_lettered) == (2, 0)
    first = batch.raw_events.row(0, named=True)
    assert first == {
        "event_id": "t-1",
        "source": "binance_spot",
        "type": "trade",
        "timestamp": datetime(2026, 1, 5, 0, 3, 17, 250000, tzinfo=UTC),
        "ingest_time": datetime(2026, 1, 5, 0, 3, 17, 300000, tzinfo=UTC),
        # The payload is stored canonically: compact and with sorted keys.
        "payload": '{"nested":{"a":1,"b":2},"p":"42000.5","q":0.25}',
        "parser_version": "binance-trade/1",
        "raw_checksum": "abc",
        "landed_at": NOW,
    }
    assert batch.raw_events["event_id"].to_list() == ["t-1", "t-2"]


def test_events_of_several_messages_and_sources_land_together():
    other = event_line("n-1", source="news", type="headline")
    batch = land_batch([(SUBJECT, event_line("t-1")), ("qraft.raw.news", other)], now=NOW)
    assert batch.raw_events["source"].to_list() == ["binance_spot", "news"]
    assert batch.dead_lettered == 0


def test_malformed_json_is_dead_lettered_with_the_parser_message():
    letter = single(b'{"event_id": "x",')
    assert letter["reason"] == "malformed JSON: Expecting property name enclosed in double quotes"
    assert letter["raw"] == '{"event_id": "x",'
    assert letter["stage"] == "land"
    assert letter["source"] == "binance_spot"
    assert letter["event_id"] == ""
    assert letter["event_time"] is None and letter["window_start"] is None
    assert letter["received_at"] == NOW


def test_invalid_utf8_is_dead_lettered_not_raised():
    letter = single(b'{"a": "\xc3\x28"}')
    assert letter["reason"] == "malformed JSON: 'utf-8' codec can't decode byte 0xc3 in position 7"
    # The bytes that are not UTF-8 stay visible as escapes.
    assert letter["raw"] == '{"a": "\\xc3("}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[1, 2]", "not an event object: list"),
        (b'"just text"', "not an event object: str"),
        (b"42", "not an event object: int"),
        (b"null", "not an event object: NoneType"),
    ],
)
def test_json_that_is_not_an_object_is_dead_lettered(line, reason):
    assert single(line)["reason"] == reason


def test_oversize_line_is_dead_lettered_and_its_raw_text_truncated():
    line = event_line("big", payload={"blob": "x" * 10_000})
    letter = single(line, max_payload_bytes=5000)
    assert letter["reason"] == f"oversize: {len(line)} bytes > 5000"
    assert letter["raw"] == line[:4096].decode()
    assert letter["event_id"] == ""


def test_an_oversize_line_in_a_long_message_costs_none_of_its_neighbours():
    big = event_line("o-2", payload={"blob": "x" * 10_000})
    data = b"\n".join([event_line("o-1"), big, event_line("o-3")])
    batch = land_batch([(SUBJECT, data)], max_payload_bytes=5000, now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["o-1", "o-3"]
    assert batch.dead_letters["reason"].to_list() == [f"oversize: {len(big)} bytes > 5000"]


def test_a_line_at_the_size_limit_lands():
    line = event_line("edge")
    batch = land_batch([(SUBJECT, line)], max_payload_bytes=len(line), now=NOW)
    assert (batch.landed, batch.dead_lettered) == (1, 0)


@pytest.mark.parametrize(("token", "shown"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_non_finite_numbers_in_the_payload_are_dead_lettered(token, shown):
    # json.loads accepts these tokens; the event model must refuse them.
    line = event_line("nan-1", payload={"p": 1.0, "deep": [{"q": 0.0}]}).replace(
        b'"q": 0.0', b'"q": ' + token.encode()
    )
    letter = single(line)
    assert letter["reason"] == (
        f"invalid event: payload: Value error, payload.deep[0].q holds a non-finite number ({shown})"
    )
    assert letter["event_id"] == "nan-1"
    assert letter["event_time"] == datetime(2026, 1, 5, 0, 3, 17, 250000, tzinfo=UTC)
    assert letter["window_start"] == datetime(2026, 1, 5, 0, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "missing", ["event_id", "source", "type", "timestamp", "ingest_time", "payload", "meta"]
)
def test_a_missing_field_is_named_in_the_reason(missing):
    letter = single(event_line("m-1", **{missing: None}))
    assert letter["reason"] == f"invalid event: {missing}: Field required"


def test_every_problem_of_an_event_is_named():
    line = event_line("m-2", type="", meta={"parser_version": ""}, extra="no")
    assert single(line)["reason"] == (
        "invalid event: type: String should have at least 1 character; "
        "meta.parser_version: String should have at least 1 character; "
        "extra: Extra inputs are not permitted"
    )


def test_adapter_dead_letter_envelope_keeps_the_adapter_reason_and_raw_record():
    envelope = dead_letter_envelope("binance trade message lacks field 's'", b'{"t": 1}', "binance_spot")
    letter = single(envelope)
    assert letter["reason"] == "adapter: binance trade message lacks field 's'"
    assert letter["raw"] == '{"t": 1}'
    assert letter["event_id"] == ""
    assert letter["letter_id"] == stable_id("lander", "binance_spot", checksum(envelope), 0)


def test_adapter_envelope_without_details_still_has_a_reason():
    assert single(b'{"qraft_dead_letter": null}')["reason"] == "adapter: unparseable record"


def test_event_published_on_another_sources_subject_is_dead_lettered():
    letter = single(event_line("x-1", source="news"))
    assert letter["reason"] == "source 'news' published on subject 'qraft.raw.binance_spot'"
    assert letter["source"] == "binance_spot"
    assert letter["event_id"] == "x-1"


def test_subject_outside_the_prefix_is_taken_as_the_source_name():
    batch = land_batch([("elsewhere", event_line("x-2"))], now=NOW)
    assert batch.dead_letters["reason"].to_list() == [
        "source 'binance_spot' published on subject 'elsewhere'"
    ]
    custom = land_batch([("feed.binance_spot", event_line("x-3"))], subject_prefix="feed", now=NOW)
    assert custom.raw_events["event_id"].to_list() == ["x-3"]


def test_a_subject_whose_source_name_no_event_may_have_dead_letters_every_line_with_its_reason():
    data = event_line("s-1", source="bad source") + b"\n" + event_line("s-2")
    batch = land_batch([("qraft.raw.bad source", data)], now=NOW)
    assert batch.landed == 0
    assert batch.dead_letters.select("source", "event_id", "reason").rows() == [
        ("bad source", "s-1", "invalid event: source: String should match pattern '^[A-Za-z0-9_\\-]{1,64}$'"),
        ("bad source", "s-2", "source 'binance_spot' published on subject 'qraft.raw.bad source'"),
    ]


def test_duplicates_within_a_batch_land_once_and_are_not_dead_letters():
    first = event_line("d-1")
    batch = land_batch(
        [(SUBJECT, first + b"\n" + event_line("d-2") + b"\n" + first), (SUBJECT, event_line("d-1"))], now=NOW
    )
    assert batch.raw_events["event_id"].to_list() == ["d-1", "d-2"]
    assert batch.dead_lettered == 0


def test_blank_lines_between_events_are_skipped_silently():
    data = b"\n\n" + event_line("b-1") + b"\n   \n\t\n" + event_line("b-2") + b"\n"
    batch = land_batch([(SUBJECT, data)], now=NOW)
    assert (batch.landed, batch.dead_lettered) == (2, 0)


def test_one_bad_line_costs_none_of_its_neighbours():
    data = b"\n".join([event_line("n-1"), b"{oops", event_line("n-2"), b"[]", event_line("n-3")])
    batch = land_batch([(SUBJECT, data)], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["n-1", "n-2", "n-3"]
    assert batch.dead_letters["reason"].to_list() == [
        "malformed JSON: Expecting property name enclosed in double quotes",
        "not an event object: list",
    ]


def test_letter_ids_are_derived_from_source_message_and_position():
    data = b"{oops\n" + event_line("ok") + b"\n{oops"
    one = land_batch([(SUBJECT, data)], now=NOW)
    again = land_batch([(SUBJECT, data)], now=NOW + timedelta(hours=1))
    ids = one.dead_letters["letter_id"].to_list()
    # A redelivered message reproduces the same ids, so the dead letter is stored once.
    assert ids == again.dead_letters["letter_id"].to_list()
    assert ids == [
        stable_id("lander", "binance_spot", checksum(data), 0),
        stable_id("lander", "binance_spot", checksum(data), 2),
    ]


def test_identical_bad_records_in_different_messages_are_each_counted():
    batch = land_batch([(SUBJECT, b"{oops"), (SUBJECT, b"{oops\n{oops"), (SUBJECT, b"{oops")], now=NOW)
    ids = batch.dead_letters["letter_id"].to_list()
    assert len(ids) == 4
    assert len(set(ids)) == 4  # four rows in dead_letters, as the counter says


def test_dead_letter_with_a_parseable_timestamp_gets_its_window():
    line = event_line("w-1", type="", timestamp="2026-01-05T00:07:59.999+02:00")
    letter = single(line, interval=timedelta(minutes=5))
    assert letter["event_time"] == datetime(2026, 1, 4, 22, 7, 59, 999000, tzinfo=UTC)
    assert letter["window_start"] == datetime(2026, 1, 4, 22, 5, tzinfo=UTC)


@pytest.mark.parametrize("timestamp", ["yesterday", 1767571200, None])
def test_dead_letter_without_a_readable_timestamp_has_no_window(timestamp):
    letter = single(event_line("w-2", type="", timestamp=timestamp))
    assert letter["event_time"] is None
    assert letter["window_start"] is None


def test_empty_input_gives_empty_frames_with_the_table_columns():
    batch = land_batch([], now=NOW)
    assert (batch.landed, batch.dead_lettered) == (0, 0)
    assert batch.raw_events.columns == [
        "event_id",
        "source",
        "type",
        "timestamp",
        "ingest_time",
        "payload",
        "parser_version",
        "raw_checksum",
        "landed_at",
    ]
    assert batch.dead_letters.columns == [
        "letter_id",
        "stage",
        "source",
        "reason",
        "raw",
        "event_id",
        "event_time",
        "window_start",
        "received_at",
    ]


def test_deeply_nested_json_is_dead_lettered_not_raised():
    batch = land_batch([(SUBJECT, event_line("ok") + b"\n" + b"[" * 100_000)], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["ok"]
    assert batch.dead_letters["reason"].to_list()[0].startswith("malformed JSON")


def test_a_lander_batch_holds_about_batch_size_lines(memory_store):
    bus = MemoryBus()
    for m in range(10):
        asyncio.run(bus.publish_raw("binance_spot", b"\n".join(event_line(f"b-{m}-{i}") for i in range(100))))
    lander = Lander(bus, memory_store, LanderConfig(batch_size=200, batch_timeout_ms=50))
    assert asyncio.run(lander.land_once()) <= 3  # at most one message beyond the limit
    assert lander.stats.landed <= 300


@pytest.mark.parametrize("envelope", [b'{"qraft_dead_letter": "oops"}', b'{"qraft_dead_letter": [1]}'])
def test_a_malformed_dead_letter_envelope_is_itself_dead_lettered(envelope):
    batch = land_batch([(SUBJECT, event_line("ok") + b"\n" + envelope)], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["ok"]
    assert batch.dead_letters["raw"].to_list() == [envelope.decode()]


@pytest.mark.parametrize("timestamp", ["2026-01-05T00:00:01Z", "2026-01-05T01:00:01+01:00", "2026-01-05T00:00:01.123456"])
def test_the_fast_path_gives_exactly_the_models_row(timestamp):
    from qraft_core.lander import well_formed_row

    document = {"event_id": "e1", "source": "binance_spot", "type": "trade", "timestamp": timestamp,
                "ingest_time": "2026-01-05T00:00:02Z", "payload": {"q": "0.5", "p": 1.25, "n": [1, {"b": None}]},
                "meta": {"parser_version": "v1", "raw_checksum": "abc", "extra": 1}}
    event = StandardEvent.model_validate(document)
    assert well_formed_row(document) == (
        event.event_id, event.source, event.type, event.timestamp, event.ingest_time,
        json.dumps(event.payload, separators=(",", ":"), sort_keys=True),
        event.meta.parser_version, event.meta.raw_checksum,
    )


@pytest.mark.parametrize("change", [
    {"timestamp": 1767571201}, {"event_id": ""}, {"source": "bad source"}, {"payload": []},
    {"meta": {}}, {"extra_field": 1},
])
def test_the_fast_path_leaves_anything_unusual_to_the_model(change):
    from qraft_core.lander import well_formed_row

    document = {"event_id": "e1", "source": "s", "type": "t", "timestamp": "2026-01-05T00:00:01Z",
                "ingest_time": "2026-01-05T00:00:02Z", "payload": {}, "meta": {"parser_version": "v1"}, **change}
    assert well_formed_row(document) is None


# -- hostile content: every field, every kind ------------------------------------------------


@pytest.mark.parametrize(("change", "reason"), [
    ({"event_id": "e\ud800"}, "invalid event: event_id: Input should be a valid string, unable to parse raw data as a unicode string"),
    ({"type": "\udfff"}, "invalid event: type: Input should be a valid string, unable to parse raw data as a unicode string"),
    ({"meta": {"parser_version": "v\ud800"}},
     "invalid event: meta.parser_version: Input should be a valid string, unable to parse raw data as a unicode string"),
    ({"meta": {"parser_version": "v", "note": "\ud800"}},
     "invalid event: meta: Value error, meta.note holds text that is not valid Unicode (a lone surrogate)"),
    ({"payload": {"k": ["ok", "\udc80"]}},
     "invalid event: payload: Value error, payload.k[1] holds text that is not valid Unicode (a lone surrogate)"),
    ({"payload": {"\ud800": 1}},
     "invalid event: payload: Value error, payload key holds text that is not valid Unicode (a lone surrogate)"),
])
def test_a_lone_surrogate_anywhere_dead_letters_that_line_only(change, reason):
    bad = event_line("s-1", **change)
    assert b"\\ud" in bad.lower()
    batch = land_batch([(SUBJECT, event_line("ok-1") + b"\n" + bad + b"\n" + event_line("ok-2"))], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["ok-1", "ok-2"]
    assert batch.dead_letters["reason"].to_list() == [reason]
    # Every text column of the dead letter encodes: the store can take it.
    for column in ("reason", "raw", "event_id", "source"):
        batch.dead_letters[column][0].encode("utf-8")


def test_a_payload_nested_deeper_than_the_limit_is_dead_lettered_with_the_limit():
    deep: Any = 1
    for _ in range(900):
        deep = [deep]
    batch = land_batch([(SUBJECT, event_line("deep", payload={"d": deep}))], now=NOW)
    assert batch.landed == 0
    assert batch.dead_letters["reason"][0].endswith("is nested deeper than 64 levels")
    assert batch.dead_letters["event_id"][0] == "deep"


def test_a_payload_at_the_nesting_limit_lands():
    deep: Any = 1
    for _ in range(63):
        deep = {"d": deep}
    assert land_batch([(SUBJECT, event_line("edge", payload=deep))], now=NOW).landed == 1


# -- one id, one row ---------------------------------------------------------------------


def test_a_re_sent_id_with_other_content_keeps_the_newest_ingest_and_dead_letters_the_other():
    older = event_line("r-1", timestamp="2026-01-05T00:00:01Z", ingest_time="2026-01-05T00:00:02Z")
    newer = event_line("r-1", timestamp="2026-01-05T00:00:09Z", ingest_time="2026-01-05T00:00:10Z")
    for messages in ([(SUBJECT, older + b"\n" + newer)], [(SUBJECT, newer), (SUBJECT, older)]):
        batch = land_batch(messages, now=NOW)
        assert batch.raw_events["timestamp"].to_list() == [datetime(2026, 1, 5, 0, 0, 9, tzinfo=UTC)]
        assert batch.dead_letters["reason"].to_list() == [
            "superseded: event id re-sent with different content; the version with event time "
            "2026-01-05T00:00:09.000Z ingested at 2026-01-05T00:00:10.000Z is kept"
        ]
        assert batch.dead_letters["raw"][0] == older.decode()
        assert batch.dead_letters["event_time"][0] == datetime(2026, 1, 5, 0, 0, 1, tzinfo=UTC)


def test_the_same_event_re_sent_with_another_ingest_time_is_a_duplicate_not_a_dead_letter():
    again = event_line("d-1", ingest_time="2026-01-05T00:09:00Z")
    batch = land_batch([(SUBJECT, event_line("d-1") + b"\n" + again)], now=NOW)
    assert (batch.landed, batch.dead_lettered) == (1, 0)


# -- event-time bounds -------------------------------------------------------------------


def origin(name: str) -> dict[str, str]:
    return {"parser_version": "v1", "origin": name}


@pytest.mark.parametrize(("timestamp", "reason"), [
    ("2026-01-05T00:08:17.400Z",
     "event time 2026-01-05T00:08:17.400Z is 300s after its ingest time (a live source allows 300s)"),
    ("2025-12-29T00:03:17.299Z",
     "event time 2025-12-29T00:03:17.299Z is 604800s before its ingest time (a live source allows 604800s)"),
])
def test_live_events_are_judged_against_their_ingest_time(timestamp, reason):
    letter = single(event_line("l-1", timestamp=timestamp, meta=origin("live")))
    assert letter["reason"] == reason


def test_live_events_within_the_bounds_land():
    lines = [event_line("l-1", timestamp="2026-01-05T00:08:17.299Z"),  # 299.999 s ahead
             event_line("l-2", timestamp="2025-12-29T00:03:17.301Z", meta=origin("live"))]
    assert land_batch([(SUBJECT, b"\n".join(lines))], now=NOW).landed == 2


def test_backfill_history_of_any_age_lands_and_a_broken_year_does_not():
    days = [datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=400 * i) for i in range(60)]
    lines = [event_line(f"h-{i}", timestamp=day.isoformat(), meta=origin("backfill")) for i, day in enumerate(days)]
    lines.append(event_line("typo", timestamp="2250-06-01T00:00:00Z", meta=origin("backfill")))
    batch = land_batch([(SUBJECT, b"\n".join(lines))], now=NOW)
    assert batch.landed == 60
    assert batch.dead_letters["event_id"].to_list() == ["typo"]
    assert batch.dead_letters["reason"][0].startswith(
        "event time 2250-06-01T00:00:00.000Z is more than 36525 days from the median event time 1982-")


@pytest.mark.parametrize(("timestamp", "reason"), [
    ("1899-12-31T23:59:59Z", "timestamp 1899-12-31T23:59:59+00:00 is outside the store's range (1900 to 2299)"),
    ("2300-01-01T00:00:00Z", "timestamp 2300-01-01T00:00:00+00:00 is outside the store's range (1900 to 2299)"),
])
def test_times_the_store_cannot_hold_are_dead_lettered(timestamp, reason):
    letter = single(event_line("x", timestamp=timestamp, meta=origin("backfill")))
    assert letter["reason"] == reason
    # The dead letter itself must fit the store: the time stays in its raw text only.
    assert letter["event_time"] is None and letter["window_start"] is None


# -- store errors: transient ones are retried, permanent ones dead-letter the refused rows ---------


class RefusingStore(MemoryStore):
    """Refuses raw-event inserts holding `poison` with `error`, the first `times` times."""

    def __init__(self, error: Exception, poison: str = "p-3", times: int = 10**6) -> None:
        super().__init__()
        self.error, self.poison, self.times, self.raw_inserts = error, poison, times, 0

    def insert(self, table: str, frame: Any) -> int:
        if table == "raw_events":
            self.raw_inserts += 1
            if self.times > 0 and self.poison in frame["event_id"].to_list():
                self.times -= 1
                raise self.error
        return super().insert(table, frame)


def land_with(store: MemoryStore, lines: int = 8, **config: Any) -> Lander:
    bus = MemoryBus()
    asyncio.run(bus.publish_raw("binance_spot", b"\n".join(event_line(f"p-{i}") for i in range(lines))))
    lander = Lander(bus, store, LanderConfig(batch_timeout_ms=20, retry_max_s=0.01, **config))
    assert asyncio.run(lander.land_once()) == 1
    return lander


def test_a_permanent_store_error_dead_letters_only_the_rows_it_is_about():
    store = RefusingStore(StoreError("store call failed: Code: 53. DB::Exception: TYPE_MISMATCH"))
    lander = land_with(store)
    assert sorted(store.tables["raw_events"]["event_id"].to_list()) == [f"p-{i}" for i in range(8) if i != 3]
    letters = store.tables["dead_letters"]
    assert letters["event_id"].to_list() == ["p-3"]
    assert letters["reason"][0] == ("store refused the event (permanent error): "
                                    "store call failed: Code: 53. DB::Exception: TYPE_MISMATCH")
    assert (lander.stats.landed, lander.stats.dead_lettered, lander.stats.retries) == (7, 1, 0)
    assert store.raw_inserts <= 2 * 3 + 1  # bisection, not one insert per row


def test_a_transient_store_error_is_retried_until_it_passes():
    store = RefusingStore(StoreUnavailable("the embedded store is held by another process"), times=3)
    lander = land_with(store)
    assert store.tables["raw_events"].height == 8
    assert (lander.stats.landed, lander.stats.dead_lettered, lander.stats.retries) == (8, 0, 3)


def test_an_unknown_store_error_is_retried_then_treated_as_permanent():
    store = RefusingStore(StoreError("store call failed: something new"))
    lander = land_with(store, max_store_attempts=3)
    assert (lander.stats.landed, lander.stats.dead_lettered, lander.stats.retries) == (7, 1, 2)
    assert store.tables["dead_letters"]["reason"][0] == (
        "store refused the event (unknown error): store call failed: something new")


def test_a_batch_refused_whole_is_dead_lettered_in_few_inserts():
    class AllRefused(RefusingStore):
        def insert(self, table: str, frame: Any) -> int:
            if table == "raw_events":
                self.raw_inserts += 1
                raise self.error
            return MemoryStore.insert(self, table, frame)

    store = AllRefused(StoreError("Code: 60. DB::Exception: UNKNOWN_TABLE"))
    lander = land_with(store, lines=500)
    assert lander.stats.dead_lettered == 500
    assert store.tables["dead_letters"].height == 500
    assert store.raw_inserts <= 2 * 64


# -- the next batch is judged while the one before it is written ---------------------------------


def two_events(m: int) -> bytes:
    """Message `m` of `messages_of_two_events`."""
    return b"\n".join(event_line(f"m{m}-{i}") for i in range(2))


def messages_of_two_events(count: int = 2) -> MemoryBus:
    bus = MemoryBus()
    for m in range(count):
        asyncio.run(bus.publish_raw("binance_spot", two_events(m)))
    return bus


@pytest.fixture
def in_progress_signals(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The data of every message the lander tells the bus is still in progress, in order."""
    signals: list[bytes] = []

    async def in_progress(message: MemoryMessage) -> None:
        signals.append(message.data)

    monkeypatch.setattr(MemoryMessage, "in_progress", in_progress)
    return signals


class QueueWatchingStore(MemoryStore):
    """Notes how many messages the bus still held at each raw-event insert."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__()
        self.bus, self.queued_at_inserts = bus, []

    def insert(self, table: str, frame: Any) -> int:
        if table == "raw_events":
            self.queued_at_inserts.append(len(self.bus.queue))
        return super().insert(table, frame)


def test_the_next_batch_is_fetched_and_judged_before_the_one_before_it_is_written():
    bus = messages_of_two_events()
    store = QueueWatchingStore(bus)
    lander = Lander(bus, store, LanderConfig(batch_size=1, batch_timeout_ms=20))
    stats = asyncio.run(lander.run(asyncio.Event(), until_idle=True))
    assert store.queued_at_inserts == [0, 0]  # the second message was taken before the first insert
    assert store.tables["raw_events"]["event_id"].to_list() == ["m0-0", "m0-1", "m1-0", "m1-1"]
    assert (stats.batches, stats.messages, stats.landed, stats.retries) == (2, 2, 4, 0)


def test_the_batch_judged_behind_a_retried_write_is_kept_in_progress(in_progress_signals: list[bytes]) -> None:
    store = RefusingStore(StoreUnavailable("the embedded store is held by another process"), poison="m0-0", times=2)
    lander = Lander(messages_of_two_events(), store, LanderConfig(batch_size=1, batch_timeout_ms=20, retry_max_s=0.01))
    stats = asyncio.run(lander.run(asyncio.Event(), until_idle=True))
    first, second = (two_events(m) for m in range(2))
    assert in_progress_signals == [first, second, first, second]
    assert (stats.messages, stats.landed, stats.retries) == (2, 4, 2)


def test_a_stop_hands_back_the_batch_judged_behind_the_write_in_flight():
    bus = messages_of_two_events()
    store = RefusingStore(StoreUnavailable("the embedded store is held by another process"), poison="m0-0")
    lander = Lander(bus, store, LanderConfig(batch_size=1, batch_timeout_ms=20, retry_max_s=0.05))

    async def scenario() -> LanderStats:
        stop = asyncio.Event()
        running = asyncio.create_task(lander.run(stop))
        while lander.stats.retries < 1:
            await asyncio.sleep(0.01)
        stop.set()
        return await running

    stats = asyncio.run(scenario())
    assert (stats.messages, stats.landed) == (0, 0)
    assert store.tables["raw_events"].height == 0
    # Both handed back, each in front of the queue: a new lander takes them at once.
    assert [m.data for m in bus.queue] == [two_events(m) for m in (1, 0)]
    assert not any(m.acked for m in bus.queue)


def test_the_batch_fetched_behind_the_judged_one_is_kept_in_progress_too(in_progress_signals: list[bytes]) -> None:
    store = RefusingStore(StoreUnavailable("the embedded store is held by another process"), poison="m0-0", times=3)
    lander = Lander(messages_of_two_events(3), store, LanderConfig(batch_size=1, batch_timeout_ms=20, retry_max_s=0.05))
    stats = asyncio.run(lander.run(asyncio.Event(), until_idle=True))
    first, second, third = (two_events(m) for m in range(3))
    # Every retry keeps the write's batch and the one judged behind it; the third, once fetched, too.
    assert in_progress_signals[:2] == [first, second]
    assert in_progress_signals.count(first) == in_progress_signals.count(second) == 3
    assert third in in_progress_signals
    assert (stats.messages, stats.landed, stats.retries) == (3, 6, 3)
    assert store.tables["raw_events"]["event_id"].to_list() == [f"m{m}-{i}" for m in range(3) for i in range(2)]


def test_a_stop_hands_back_the_batch_fetched_behind_the_judged_one():
    bus = messages_of_two_events(3)
    store = RefusingStore(StoreUnavailable("the embedded store is held by another process"), poison="m0-0")
    lander = Lander(bus, store, LanderConfig(batch_size=1, batch_timeout_ms=20, retry_max_s=0.05))

    async def scenario() -> LanderStats:
        stop = asyncio.Event()
        running = asyncio.create_task(lander.run(stop))
        while lander.stats.retries < 2:
            await asyncio.sleep(0.01)
        assert not bus.queue  # all three in hand: written, judged, fetched
        stop.set()
        return await running

    stats = asyncio.run(scenario())
    assert (stats.messages, stats.landed) == (0, 0)
    assert sorted(m.data for m in bus.queue) == [two_events(m) for m in range(3)]
    assert not any(m.acked for m in bus.queue)


def land_lines(store: MemoryStore, *lines: bytes, **config: Any) -> Lander:
    bus = MemoryBus()
    asyncio.run(bus.publish_raw("binance_spot", b"\n".join(lines)))
    lander = Lander(bus, store, LanderConfig(batch_timeout_ms=20, **config))
    asyncio.run(lander.land_once())
    return lander


def test_across_batches_the_newest_ingest_wins_within_the_resend_window(memory_store):
    land_lines(memory_store, event_line("r-1", timestamp="2026-01-05T00:00:01Z", ingest_time="2026-01-05T00:00:02Z"))
    newer = event_line("r-1", timestamp="2026-01-05T00:00:09Z", ingest_time="2026-01-05T00:00:10Z")
    lander = land_lines(memory_store, newer)
    assert (lander.stats.landed, lander.stats.dead_lettered) == (1, 1)
    assert memory_store.tables["raw_events"]["timestamp"].to_list() == [datetime(2026, 1, 5, 0, 0, 9, tzinfo=UTC)]
    assert memory_store.tables["dead_letters"]["reason"][0].startswith("superseded: ")
    # An older version arriving late loses to the stored one.
    stale = event_line("r-1", timestamp="2026-01-05T00:00:05Z", ingest_time="2026-01-05T00:00:03Z")
    lander = land_lines(memory_store, stale)
    assert (lander.stats.landed, lander.stats.dead_lettered) == (0, 1)
    assert memory_store.tables["raw_events"].height == 1


def test_a_version_moved_beyond_the_resend_window_is_not_looked_for(memory_store):
    land_lines(memory_store, event_line("r-2", timestamp="2026-01-05T00:00:01Z"), resend_window_s=60)
    land_lines(memory_store, event_line("r-2", timestamp="2026-01-05T00:02:01Z",
                                        ingest_time="2026-01-05T00:03:17.300Z"), resend_window_s=60)
    assert memory_store.tables["raw_events"].height == 2


class LookupCountingStore(MemoryStore):
    """Counts the stored-version lookups (selects by event id) of raw_events."""

    def __init__(self) -> None:
        super().__init__()
        self.id_lookups: list[list[str]] = []
        self.id_reads: list[tuple[datetime, datetime]] = []  # spans whose stored ids were read

    def select(self, table: str, **kwargs: Any) -> Any:
        if kwargs.get("columns") == ["event_id"]:
            self.id_reads.append((kwargs["start"], kwargs["end"]))
        for item in kwargs.get("where", ()):
            if table == "raw_events" and item.column == "event_id":
                self.id_lookups.append(sorted(item.value))
        return super().select(table, **kwargs)


def land_each(lander: Lander, bus: MemoryBus, *lines: bytes) -> None:
    asyncio.run(bus.publish_raw("binance_spot", b"\n".join(lines)))
    assert asyncio.run(lander.land_once()) == 1


@pytest.mark.parametrize(("memory_max", "lookups"), [
    (1_000_000, [["a", "old"]]),  # all-new ids are not looked up; the re-sent ones alone are
    (1, [["a", "c", "old"]]),  # the memory outgrew its size: the next batch's window is read again, too many
    (0, [["a", "b"], ["a", "c", "old"]]),  # stored ids beyond the memory: every batch is looked up whole
])
def test_one_lander_looks_up_only_ids_it_may_have_stored(monkeypatch, memory_max, lookups):
    monkeypatch.setattr("qraft_core.lander.ID_MEMORY_MAX", memory_max)
    store, bus = LookupCountingStore(), MemoryBus()
    # A version stored before this lander started is found through the memory's first read.
    store.insert("raw_events", land_batch([(SUBJECT, event_line("old", ingest_time="2026-01-05T00:03:17Z"))],
                                          now=NOW).raw_events)
    lander = Lander(bus, store, LanderConfig(batch_timeout_ms=20))
    land_each(lander, bus, event_line("a"), event_line("b"))
    land_each(lander, bus, event_line("c"), event_line("a", type="quote", ingest_time="2026-01-05T00:03:18Z"),
              event_line("old", type="quote"))
    assert sorted(store.tables["raw_events"]["type"].to_list()) == ["quote", "quote", "trade", "trade"]
    assert sorted(store.tables["dead_letters"]["event_id"].to_list()) == ["a", "old"]
    assert all(r.startswith("superseded: ") for r in store.tables["dead_letters"]["reason"].to_list())
    assert store.id_lookups == lookups


def test_the_id_memory_holds_each_id_once_in_few_pieces():
    known = _KnownIds(datetime.min, datetime.max, pl.Series(dtype=pl.UInt64))
    held = [known.remember(pl.Series([n, n + 1, n + 1], dtype=pl.UInt64)).to_list() for n in range(200)]
    assert held == [[], *([n] for n in range(1, 200))]
    assert known.hashes.sort().to_list() == list(range(201))
    assert known.hashes.n_chunks() <= _MEMORY_CHUNKS


def test_the_id_memory_never_reads_the_years_between_live_and_backfill_batches():
    store, bus = LookupCountingStore(), MemoryBus()
    lander = Lander(bus, store, LanderConfig(batch_timeout_ms=20, resend_window_s=60))
    land_each(lander, bus, event_line("live"))
    land_each(lander, bus, event_line("old", timestamp="1950-01-01T00:00:00Z",
                                      meta={"parser_version": "v1", "origin": "backfill"}))
    land_each(lander, bus, event_line("live", type="quote", ingest_time="2026-01-05T00:03:18Z"))
    assert store.tables["raw_events"].height == 2
    assert store.tables["dead_letters"]["event_id"].to_list() == ["live"]  # found again after the backfill
    # Each read spans a batch's resend window either side, and one more ahead.
    assert all(end - start < timedelta(minutes=4) for start, end in store.id_reads)


def test_the_id_memory_reads_a_resend_window_ahead_so_the_next_live_batches_read_nothing():
    store, bus = LookupCountingStore(), MemoryBus()
    lander = Lander(bus, store, LanderConfig(batch_timeout_ms=20, resend_window_s=60))
    # Each batch's window ends later than the one before, within what the first read covered.
    for n, stamp in enumerate(("2026-01-05T00:03:17Z", "2026-01-05T00:03:47Z", "2026-01-05T00:04:17Z")):
        land_each(lander, bus, event_line(f"e-{n}", timestamp=stamp, ingest_time=stamp))
    assert store.id_reads == [(datetime(2026, 1, 5, 0, 2, 17, tzinfo=UTC),
                               datetime(2026, 1, 5, 0, 5, 17, 1000, tzinfo=UTC))]
    assert store.tables["raw_events"].height == 3


# -- the compiled path --------------------------------------------------------------------------


def test_plain_events_are_landed_without_the_per_line_judge(monkeypatch):
    def judge_line(*args: Any) -> None:
        raise AssertionError("a plain event reached the per-line judge")

    monkeypatch.setattr("qraft_core.lander._judge_line", judge_line)
    lines = [
        event_line("c-1", payload={"p": 1.5, "big": 1e16, "tiny": 1e-05, "n": [1, {"b": None, "a": True}]}),
        json.dumps(json.loads(event_line("c-2", payload={"name": "café ☕ 𝄞", "del": "x"})), ensure_ascii=False).encode(),
        event_line("c-3", timestamp="2026-01-05T00:03:17Z", meta={"parser_version": "v", "origin": "backfill"}),
    ]
    batch = land_batch([(SUBJECT, b"\n".join(lines) + b"\n")], now=NOW)
    assert batch.dead_lettered == 0
    assert batch.raw_events["payload"].to_list() == [
        '{"big":1e+16,"n":[1,{"a":true,"b":null}],"p":1.5,"tiny":1e-05}',
        '{"del":"x","name":"caf\\u00e9 \\u2615 \\ud834\\udd1e"}',
        '{"nested":{"a":1,"b":2},"p":"42000.5","q":0.25}',
    ]


def test_event_times_of_every_shape_are_read_as_the_model_reads_them():
    times = ["2026-01-05T00:03:17.2Z", "2026-01-05T01:03:17.123456+01:00", "2026-01-05T00:03:17Z",
             "2026-02-30T00:03:17Z", "2026-01-05T24:03:17Z", "2026-01-05T00:03:17.1234567Z"]
    data = b"\n".join(event_line(f"t-{i}", timestamp=t) for i, t in enumerate(times))
    for compiled in (True, False):
        batch = land_batch([(SUBJECT, data)], now=NOW, compiled=compiled)
        assert batch.raw_events.select("event_id", "timestamp").rows() == [
            ("t-0", datetime(2026, 1, 5, 0, 3, 17, 200000, tzinfo=UTC)),
            ("t-1", datetime(2026, 1, 5, 0, 3, 17, 123000, tzinfo=UTC)),
            ("t-2", datetime(2026, 1, 5, 0, 3, 17, tzinfo=UTC)),
            ("t-5", datetime(2026, 1, 5, 0, 3, 17, 123000, tzinfo=UTC)),
        ]
        prefix = "invalid event: timestamp: Input should be a valid datetime or date, "
        assert batch.dead_letters.select("event_id", "reason").rows() == [
            ("t-3", prefix + "day value is outside expected range"),
            ("t-4", prefix + "unexpected extra characters at the end of the input"),
        ]


def test_a_payload_integer_longer_than_the_limit_is_dead_lettered():
    batch = land_batch([(SUBJECT, event_line("i-1", payload={"n": 10**3999}) + b"\n" + event_line("ok"))], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["ok"]
    assert batch.dead_letters["reason"].to_list() == [
        "invalid event: payload: Value error, payload.n holds an integer of more than 13000 bits"]


def test_a_newer_version_out_of_the_backfill_bounds_is_dead_lettered_as_its_own_line():
    backfill = {"parser_version": "v1", "origin": "backfill"}
    lines = [event_line(f"h-{i}", timestamp=f"195{i}-01-01T00:00:00Z", meta=backfill) for i in range(5)]
    old = event_line("x", timestamp="1951-06-01T00:00:00Z", ingest_time="2026-01-05T00:00:02Z", meta=backfill)
    new = event_line("x", timestamp="2200-06-01T00:00:00Z", ingest_time="2026-01-05T00:00:03Z", meta=backfill)
    data = b"\n".join([old, *lines, new])
    batch = land_batch([(SUBJECT, data)], now=NOW)
    assert batch.raw_events["event_id"].to_list() == [f"h-{i}" for i in range(5)]
    letters = batch.dead_letters
    superseded, far = letters["reason"].to_list()
    assert superseded.startswith("superseded: ")
    assert far.startswith("event time 2200-06-01T00:00:00.000Z is more than 36525 days from the median")
    assert letters["raw"].to_list() == [old.decode(), new.decode()]
    assert letters["letter_id"].to_list() == [stable_id("lander", "binance_spot", checksum(data), index)
                                              for index in (0, 6)]
