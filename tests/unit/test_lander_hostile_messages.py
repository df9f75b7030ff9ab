"""Hostile messages as a whole: many bad lines, repeats, empty ones, ambiguous epoch numbers."""

from __future__ import annotations

import asyncio
import json
import threading
import tracemalloc

import pytest

from qraft_core import lander as lander_module
from qraft_core.bus.fake import MemoryBus, MemoryMessage
from qraft_core.config import LanderConfig
from qraft_core.lander import MAX_LETTERS_PER_MESSAGE, Lander, land_batch
from qraft_core.store.fake import MemoryStore
from tests.unit.test_land_batch import NOW, SUBJECT, event_line, land_lines


def test_a_message_of_more_bad_lines_than_the_bound_gets_one_letter_for_the_rest():
    extra = 700
    data = b"x\n" * (MAX_LETTERS_PER_MESSAGE + extra) + event_line("good")
    batch = land_batch([(SUBJECT, data)], now=NOW)
    assert batch.raw_events["event_id"].to_list() == ["good"]
    assert batch.dead_lettered == MAX_LETTERS_PER_MESSAGE + 1
    assert batch.dead_letters["letter_id"].n_unique() == batch.dead_lettered
    summary = batch.dead_letters.row(-1, named=True)
    assert summary["reason"] == (
        f"{extra} more bad lines in this message from line {MAX_LETTERS_PER_MESSAGE + 1} on, beyond the "
        f"{MAX_LETTERS_PER_MESSAGE} dead-lettered one by one; the first of them: malformed JSON: Expecting value"
    )
    assert summary["raw"] == "x"


def test_a_hostile_message_costs_a_small_multiple_of_its_size():
    data = b"x\n" * 200_000
    tracemalloc.start()
    try:
        batch = land_batch([(SUBJECT, data)], now=NOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch.dead_lettered == MAX_LETTERS_PER_MESSAGE + 1
    assert peak < 60 * len(data)  # was ~700 times: a Python object, a dict and a frame row per line


def test_lines_past_the_bound_that_may_be_events_are_still_judged_whole():
    data = b"[]\n" * (MAX_LETTERS_PER_MESSAGE + 3) + event_line("late") + b"\n{}"
    batch = land_batch([(SUBJECT, data)], now=NOW, compiled=False)
    assert batch.raw_events["event_id"].to_list() == ["late"]
    assert batch.dead_letters["reason"][-1].startswith(f"4 more bad lines in this message from line "
                                                        f"{MAX_LETTERS_PER_MESSAGE + 1} on")


def test_the_bus_is_told_a_message_is_in_progress_while_it_is_judged(monkeypatch):
    signalled = threading.Event()

    async def in_progress(message: MemoryMessage) -> None:
        signalled.set()

    monkeypatch.setattr(MemoryMessage, "in_progress", in_progress)
    monkeypatch.setattr(lander_module, "IN_PROGRESS_EVERY_S", 0.01)
    judge = Lander._judge

    def slow_judge(self, messages):  # type: ignore[no-untyped-def]
        assert signalled.wait(30), "no in-progress signal while judging"
        return judge(self, messages)

    monkeypatch.setattr(Lander, "_judge", slow_judge)
    bus = MemoryBus()
    asyncio.run(bus.publish_raw("binance_spot", event_line("slow")))
    store = MemoryStore()
    stats = asyncio.run(Lander(bus, store, LanderConfig(batch_timeout_ms=20)).run(asyncio.Event(), until_idle=True))
    assert stats.landed == 1


def test_the_same_bad_message_published_again_is_a_letter_of_its_own_and_redelivered_it_is_not():
    ids = [land_batch([(SUBJECT, b"{oops")], now=NOW, sequences=[sequence]).dead_letters["letter_id"][0]
           for sequence in (7, 8, 7)]
    assert ids[0] != ids[1]
    assert ids[0] == ids[2]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \t\r\n "])
def test_an_empty_message_is_a_dead_letter(data):
    batch = land_batch([(SUBJECT, data)], now=NOW)
    assert (batch.landed, batch.dead_lettered) == (0, 1)
    assert batch.dead_letters["reason"][0] == "empty message"


def test_an_envelope_that_is_a_list_is_named_malformed():
    batch = land_batch([(SUBJECT, b'{"qraft_dead_letter": []}')], now=NOW)
    assert batch.dead_letters["reason"].to_list() == ["adapter: malformed dead-letter envelope"]


def test_a_byte_order_mark_before_a_line_is_named():
    batch = land_batch([(SUBJECT, b"\xef\xbb\xbf" + event_line("bom"))], now=NOW)
    assert batch.dead_letters["reason"].to_list() == ["malformed JSON: the line begins with a UTF-8 byte order mark"]


def test_an_epoch_number_in_milliseconds_of_old_history_lands_at_its_time():
    # Numbers past 2e10 are milliseconds: a history in milliseconds from before 2001 is far more
    # common than epoch seconds after the year 2603.
    line = event_line("n", timestamp=820454400000, meta={"parser_version": "v", "origin": "backfill"})
    batch = land_batch([(SUBJECT, line)], now=NOW)
    assert batch.landed == 1
    assert str(batch.raw_events["timestamp"][0]).startswith("1996-01-01 00:00:00")


@pytest.mark.parametrize("number", [1767571200, 1767571200000])
def test_epoch_seconds_and_milliseconds_still_land(number):
    line = event_line("n", timestamp=number, meta={"parser_version": "v", "origin": "backfill"})
    assert land_batch([(SUBJECT, line)], now=NOW).landed == 1


def test_an_older_version_sent_twice_is_one_superseded_letter():
    v1 = event_line("v", payload={"v": 1}, ingest_time="2026-01-05T00:03:17.300Z")
    v2 = event_line("v", payload={"v": 2}, ingest_time="2026-01-05T00:03:18Z")
    batch = land_batch([(SUBJECT, b"\n".join([v1, v2, v1]))], now=NOW)
    assert batch.raw_events["payload"].to_list() == ['{"v":2}']
    assert batch.dead_lettered == 1


@pytest.mark.parametrize("compiled", [True, False])
def test_an_older_version_re_sent_after_a_newer_one_wins_as_it_does_across_batches(compiled):
    v1 = event_line("v", payload={"v": 1}, ingest_time="2026-01-05T00:03:17Z")
    v2 = event_line("v", payload={"v": 2}, ingest_time="2026-01-05T00:03:18Z")
    v1_again = event_line("v", payload={"v": 1}, ingest_time="2026-01-05T00:03:19Z")
    batch = land_batch([(SUBJECT, b"\n".join([v1, v2, v1_again]))], now=NOW, compiled=compiled)
    store = MemoryStore()
    for line in (v1, v2, v1_again):
        land_lines(store, line)
    stored = store.tables["raw_events"]
    assert batch.raw_events.select("payload", "ingest_time").rows() == stored.select("payload", "ingest_time").rows()
    assert batch.raw_events["payload"].to_list() == ['{"v":1}']
    assert batch.raw_events["ingest_time"].dt.second().to_list() == [19]
    assert batch.dead_lettered == store.tables["dead_letters"].height == 2


def test_the_letter_bound_keeps_the_first_bad_lines_whichever_judge_finds_them_and_in_any_batch():
    # Lines with a number that overflows are refused late by the compiled judge (`CompiledRows.checked`).
    def compact(line: bytes) -> bytes:  # as adapters write them: a payload matching its message's template
        return json.dumps(json.loads(line), separators=(",", ":")).encode()

    overflowing = [compact(event_line(f"inf{i}", payload={"a": 1})).replace(b'"a":1', b'"a":1e999') for i in range(2)]
    data = b"\n".join([compact(event_line("good", payload={"a": 1})), *overflowing, *[b"x"] * MAX_LETTERS_PER_MESSAGE])
    templates = [(SUBJECT, event_line(f"o{k}", payload={f"k{k}": 1})) for k in range(40)]
    deliveries = [([(SUBJECT, data)], True), ([(SUBJECT, data)], False), ([*templates, (SUBJECT, data)], True)]
    letters = []
    for messages, compiled in deliveries:
        sequences = [*range(100, 100 + len(messages) - 1), 7]  # the message is stream sequence 7 each time
        batch = land_batch(messages, now=NOW, compiled=compiled, sequences=sequences)
        letters.append(batch.dead_letters.select("letter_id", "reason", "raw", "event_id").rows())
    assert letters[0] == letters[1] == letters[2]
    assert len(letters[0]) == MAX_LETTERS_PER_MESSAGE + 1
    assert letters[0][0][1].startswith("invalid event: payload")  # line 2, the first bad one, has its own
    assert letters[0][-1][1].startswith(f"2 more bad lines in this message from line {MAX_LETTERS_PER_MESSAGE + 2} "
                                        f"on, beyond the {MAX_LETTERS_PER_MESSAGE} dead-lettered one by one; "
                                        "the first of them: malformed JSON")
