"""The cleaning step: numeric fields, clock checks, and raw = clean + dead-lettered per window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from qraft_core.clean import check_event, clean_frame, clean_windows
from qraft_core.config import CleanConfig
from qraft_core.events import stable_id
from qraft_core.store.base import Filter

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
CONFIG = CleanConfig()


def check(
    payload: dict | str, *, event_type: str = "trade", ahead_s: float = 0.0, config: CleanConfig = CONFIG
):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    ingest = T0 + timedelta(seconds=10)
    return check_event(text, event_type, ingest + timedelta(seconds=ahead_s), ingest, config)


def test_numeric_strings_are_accepted_and_the_payload_is_kept_as_it_landed():
    assert check({"q": "0.25", "p": "42000.5", "s": "BTCUSDT"}) == (None, False)


def test_numbers_pass_and_other_types_are_not_checked():
    assert check({"p": 3, "q": 1e-8}) == (None, False)
    assert check({"headline": "x", "p": "abc"}, event_type="headline") == (None, False)


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        ("abc", "abc"),
        ("-1.5", "-1.5"),
        (-2, "-2"),
        (0, "0"),
        ("0", "0"),
        (None, "nothing"),
        ("NaN", "NaN"),
        ("inf", "inf"),
        ([1], "[1]"),
    ],
)
def test_bad_negative_zero_or_non_finite_numbers_are_rejected_with_the_value(p, shown):
    reason, repaired = check({"p": p, "q": "1"})
    assert reason == f"payload.p: expected a positive number, got {shown}"
    assert repaired is False


def test_a_missing_numeric_field_is_rejected():
    assert check({"p": "1"})[0] == "payload.q: expected a positive number, got nothing"


def test_payload_that_is_not_an_object_is_rejected():
    assert check("[1, 2]")[0] == "payload is not a JSON object"
    assert check(" 42")[0] == "payload is not a JSON object"


def test_event_time_beyond_max_future_is_rejected():
    reason, repaired = check({"p": 1, "q": 1}, ahead_s=301)
    assert reason == "event time is 301s after its ingest time (more than max_future_s=300)"
    assert repaired is False


@pytest.mark.parametrize(("ahead_s", "repaired"), [(300, True), (0.001, True), (0, False), (-5, False)])
def test_clock_skew_within_the_bound_is_kept_and_flagged(ahead_s, repaired):
    assert check({"p": 1, "q": 1}, ahead_s=ahead_s) == (None, repaired)


def test_events_older_than_max_age_are_rejected():
    config = CleanConfig(max_age_days=2)
    assert check({"p": 1, "q": 1}, ahead_s=-2 * 86400, config=config)[0] is None
    assert check({"p": 1, "q": 1}, ahead_s=-2 * 86400 - 1, config=config)[0] == (
        "event time is more than max_age_days=2 before its ingest time"
    )


def test_numeric_fields_take_numbers_of_any_sign_per_type():
    config = CleanConfig(numeric_fields={"quote": ["bid"]})
    for value in ("0", "-3.5", -2, 0):
        assert check({"bid": value}, event_type="quote", config=config)[0] is None
    assert check({"bid": "abc"}, event_type="quote", config=config)[0] == (
        "payload.bid: expected a finite number, got abc"
    )
    assert check({"bid": "inf"}, event_type="quote", config=config)[0] == (
        "payload.bid: expected a finite number, got inf"
    )
    # Positive prices are the markets plugin's rule for trades, whatever numeric_fields says.
    assert check({"p": "0", "q": "1"}, config=config)[0] == "payload.p: expected a positive number, got 0"


def raw_row(
    event_id: str,
    second: float,
    payload: dict,
    *,
    ahead_s: float = 0.0,
    source: str = "binance_spot",
    event_type: str = "trade",
) -> dict:
    """An event at T0 + `second` whose clock ran `ahead_s` ahead of its ingest time."""
    timestamp = T0 + timedelta(seconds=second)
    return {
        "event_id": event_id,
        "source": source,
        "type": event_type,
        "timestamp": timestamp,
        "ingest_time": timestamp - timedelta(seconds=ahead_s),
        "payload": json.dumps(payload),
        "parser_version": "v1",
        "raw_checksum": "",
        "landed_at": timestamp,
    }


def raw_frame(rows: list[dict]) -> pl.DataFrame:
    ms = pl.Datetime("ms", "UTC")
    return pl.DataFrame(rows, schema_overrides={"timestamp": ms, "ingest_time": ms, "landed_at": ms})


def seeded_rows() -> list[dict]:
    """Two one-minute windows: 5 clean (1 repaired) and 4 rejected events."""
    return [
        raw_row("good-1", 1, {"p": "100.5", "q": "2"}),
        raw_row("good-2", 2, {"p": 101, "q": 1}),
        raw_row("skewed", 3, {"p": "99", "q": "1"}, ahead_s=30),
        raw_row("bad-price", 4, {"p": "n/a", "q": "1"}),
        raw_row("negative", 5, {"p": "-1", "q": "1"}),
        raw_row("headline", 6, {"title": "x"}, source="news", event_type="headline"),
        raw_row("zero-qty", 61, {"p": "100", "q": 0}),
        raw_row("future", 62, {"p": "100", "q": "1"}, ahead_s=400),
        raw_row("good-3", 63, {"p": "102", "q": "3"}),
    ]


def test_clean_frame_splits_a_window_and_keeps_the_reasons():
    clean, dead = clean_frame(raw_frame(seeded_rows()), MINUTE, CONFIG)
    assert clean["event_id"].to_list() == ["good-1", "good-2", "skewed", "headline", "good-3"]
    assert clean["repaired"].to_list() == [0, 0, 1, 0, 0]
    assert clean["payload"].to_list()[0] == '{"p": "100.5", "q": "2"}'
    assert clean["window_start"].to_list() == [T0] * 4 + [T0 + MINUTE]
    assert dict(zip(dead["event_id"], dead["reason"], strict=True)) == {
        "bad-price": "payload.p: expected a positive number, got n/a",
        "negative": "payload.p: expected a positive number, got -1",
        "zero-qty": "payload.q: expected a positive number, got 0",
        "future": "event time is 400s after its ingest time (more than max_future_s=300)",
    }
    assert dead["letter_id"].to_list() == [stable_id("clean", e) for e in dead["event_id"]]
    assert set(dead["stage"]) == {"clean"}
    # The raw payload is kept as it arrived, for whoever has to look at it.
    assert dead.filter(pl.col("event_id") == "bad-price")["raw"].item() == '{"p": "n/a", "q": "1"}'


def store_counts(store) -> tuple[int, int, int, int]:
    with store.session():
        return (
            store.count("raw_events")[""],
            store.count("clean_events")[""],
            store.count("dead_letters", where=[Filter("stage", "=", "clean")])[""],
            store.count("clean_events", where=[Filter("repaired", "=", 1)])[""],
        )


def test_clean_windows_on_chdb_accounts_for_every_raw_row_and_is_idempotent(chdb_store):
    chdb_store.insert("raw_events", raw_frame(seeded_rows()))
    first = clean_windows(chdb_store, T0, T0 + 2 * MINUTE, MINUTE, CONFIG)
    assert (first.windows, first.raw, first.clean, first.dead_lettered, first.repaired, first.by_source) == (
        2, 9, 5, 4, 1, {"binance_spot": 4, "news": 1}
    )
    expected = first
    assert first.raw == first.clean + first.dead_lettered
    assert store_counts(chdb_store) == (9, 5, 4, 1)

    second = clean_windows(chdb_store, T0, T0 + 2 * MINUTE, MINUTE, CONFIG)
    assert second == expected
    assert store_counts(chdb_store) == (9, 5, 4, 1)

    windows = chdb_store.select("dead_letters", order_by=("event_id",), columns=("event_id", "window_start"))
    assert windows.rows() == [
        ("bad-price", T0),
        ("future", T0 + MINUTE),
        ("negative", T0),
        ("zero-qty", T0 + MINUTE),
    ]
    clean = chdb_store.select("clean_events", start=T0 + MINUTE, end=T0 + 2 * MINUTE)
    assert clean["event_id"].to_list() == ["good-3"]
    assert clean["window_start"].to_list() == [T0 + MINUTE]


def test_recleaning_one_window_leaves_the_others_and_the_landing_dead_letters_alone(chdb_store):
    chdb_store.insert("raw_events", raw_frame(seeded_rows()))
    landing_letter = pl.DataFrame(
        {
            "letter_id": ["l-1"],
            "stage": ["land"],
            "source": ["binance_spot"],
            "reason": ["malformed JSON"],
            "raw": ["{"],
            "event_id": [""],
            "event_time": [T0],
            "window_start": [T0],
            "received_at": [T0],
        }
    )
    chdb_store.insert("dead_letters", landing_letter)
    clean_windows(chdb_store, T0, T0 + 2 * MINUTE, MINUTE, CONFIG)
    # A stricter rule re-run on the first window only.
    strict = CleanConfig(numeric_fields={"trade": ["p", "q"], "headline": ["score"]})
    result = clean_windows(chdb_store, T0, T0 + MINUTE, MINUTE, strict)
    assert (result.raw, result.clean, result.dead_lettered) == (6, 3, 3)
    assert store_counts(chdb_store) == (9, 4, 5, 1)
    assert chdb_store.count("dead_letters", group_by="stage") == {"clean": 5, "land": 1}


def test_old_history_on_chdb_cleans_and_a_window_of_rejects_says_why(chdb_store):
    ingest = datetime(2026, 11, 30, tzinfo=UTC)
    old = datetime(2014, 3, 1, tzinfo=UTC)
    rows = []
    for i, value in enumerate([-2.5, 0, 3]):
        row = raw_row(f"m{i}", 0, {"value": value}, source="cpu", event_type="record")
        rows.append({**row, "timestamp": old + timedelta(minutes=i), "ingest_time": ingest, "landed_at": ingest})
    # A broken clock in the same file: 1970 is more than max_age_days before the file's newest event.
    stray = raw_row("epoch0", 0, {"value": 1}, source="cpu", event_type="record")
    rows.append({**stray, "timestamp": datetime(1970, 1, 1, tzinfo=UTC), "ingest_time": ingest, "landed_at": ingest})
    chdb_store.insert("raw_events", raw_frame(rows))
    config = CleanConfig(numeric_fields={"record": ["value"]})
    kept = clean_windows(chdb_store, old, old + 3 * MINUTE, MINUTE, config)
    assert (kept.raw, kept.clean, kept.dead_lettered) == (3, 3, 0)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rejected = clean_windows(chdb_store, epoch, epoch + MINUTE, MINUTE, config)
    assert (rejected.clean, rejected.dead_lettered) == (0, 1)
    assert rejected.as_metadata()["rejected"] == {
        "event time is more than max_age_days=3650 before the newest event of its source": 1
    }


def test_a_replay_summary_says_why_a_window_has_no_clean_events():
    from qraft_cli.replay import _no_data_reason

    assert _no_data_reason({"dead_letters_by_reason": {}, "dead_letters": 0}) == "  (no data in this window)"
    summary = {"dead_letters": 5, "dead_letters_by_reason": {"event time is more than max_age_days=3650 before "
                                                            "its ingest time": 5}}
    assert _no_data_reason(summary) == (
        "  (all 5 events were dead-lettered: event time is more than max_age_days=3650 before its ingest time (5))"
    )
