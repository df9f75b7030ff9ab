"""Hostile bus messages thrown at `land_batch`: nothing raises, every line is one raw event or one
dead letter with a reason, and every row is one the store can take."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from qraft_core.events import dead_letter_envelope
from qraft_core.lander import STORE_TIME_RANGE, EventTimeBounds, _LineParser, land_batch
from tests.unit.fuzz_strategies import FUZZ, NOW, garbage, json_line, text, times, values

FIELDS = ("event_id", "source", "type", "timestamp", "ingest_time", "payload", "meta")


@st.composite
def event_documents(draw: st.DrawFn, n: int) -> bytes:
    """An event whose every field may be good, missing or hostile; its id is unique unless hostile."""
    good: dict[str, Any] = {
        "event_id": f"e-{n}", "source": "fuzz", "type": "record",
        "timestamp": (NOW - timedelta(seconds=n)).isoformat(), "ingest_time": NOW.isoformat(),
        "payload": {"v": n}, "meta": {"parser_version": "v1"},
    }
    hostile = {
        "event_id": st.one_of(text.map(lambda t: f"e-{n}-{t}"), values, st.just("x" * 300)),
        "source": st.one_of(st.just("other"), values, st.just("bad source")),
        "type": st.one_of(text, values),
        "timestamp": times,
        "ingest_time": times,
        "payload": st.one_of(st.dictionaries(text, values, max_size=3), values),
        "meta": st.one_of(
            st.fixed_dictionaries({"parser_version": st.one_of(text, values)},
                                  optional={"origin": st.one_of(st.sampled_from(["live", "backfill"]), values),
                                            "note": values}),
            values),
    }
    document = dict(good)
    for field in draw(st.sets(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            del document[field]
        else:
            document[field] = draw(hostile[field])
    if draw(st.booleans()):
        document["extra"] = draw(values)
    return json_line(document)


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    batch, n = [], 0
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        lines = []
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            kind = draw(st.sampled_from(["event", "event", "event", "garbage", "envelope", "value"]))
            if kind == "event":
                lines.append(draw(event_documents(n)))
            elif kind == "garbage":
                lines.append(draw(garbage) or b"{")
            elif kind == "envelope":
                lines.append(dead_letter_envelope(draw(text), draw(st.one_of(garbage, text)), draw(text)))
            else:
                lines.append(json_line(draw(values)))
            n += 1
        subject = draw(st.sampled_from(["qraft.raw.fuzz", "qraft.raw.fuzz", "elsewhere", "qraft.raw.\udc80"]))
        batch.append((subject, b"\n".join(lines)))
    return batch


def records(data: bytes) -> int:
    """The records a message holds: its non-blank lines, or one (an empty message is a dead letter)."""
    return max(1, sum(1 for line in data.split(b"\n") if line.strip()))


@FUZZ
@given(batch=messages(), resend=st.booleans())
def test_every_line_is_one_row_or_one_dead_letter_the_store_can_take(batch, resend):
    if resend:  # the first message again, after the others: identical lines are duplicates, not losses
        batch = [*batch, batch[0]]
    landed = land_batch(batch, now=NOW)
    lines = sum(records(data) for _, data in batch)
    duplicates = lines - sum(records(data) for _, data in batch[:-1]) if resend else 0
    # A re-sent line is either a duplicate of its first landing or dead-lettered again.
    assert lines - duplicates <= landed.landed + landed.dead_lettered <= lines
    assert len(set(landed.dead_letters["letter_id"].to_list())) == landed.dead_lettered
    assert landed.raw_events.select("source", "event_id").is_unique().all()
    assert all(landed.dead_letters["reason"].to_list())
    for column in ("letter_id", "reason", "raw", "event_id", "source"):
        for value in landed.dead_letters[column].to_list():
            value.encode("utf-8")
    for column in ("event_id", "source", "type", "payload", "parser_version", "raw_checksum"):
        for value in landed.raw_events[column].to_list():
            value.encode("utf-8")
    for payload in landed.raw_events["payload"].to_list():
        assert isinstance(json.loads(payload), dict)
    low, high = STORE_TIME_RANGE
    for column, frame in (("event_time", landed.dead_letters), ("timestamp", landed.raw_events),
                          ("ingest_time", landed.raw_events)):
        assert all(value is None or low <= value <= high for value in frame[column].to_list())


# Lines the compiled decoder must judge as `json` does: hostile values, garbage, and printable ASCII
# JSON that mixes floats, short escapes, DEL and non-ASCII into otherwise plain events.
ascii_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(),
              st.text(alphabet=st.characters(max_codepoint=0x80), max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(line=st.one_of(garbage, values.map(json_line), ascii_json.map(json_line),
                      ascii_json.map(lambda v: json.dumps({"payload": v}, ensure_ascii=False).encode())))
def test_compiled_decoder_agrees_with_json(line):
    parser = _LineParser()
    try:
        document, finite = parser.parse(line)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            json.loads(line.decode("utf-8"))
        return
    assert document == json.loads(line.decode("utf-8")) or not finite  # NaN != NaN
    if finite and isinstance(document, dict):
        canonical = json.dumps(document, separators=(",", ":"), sort_keys=True)
        assert parser.canonical_encoder(line)(document) == canonical


# -- the compiled path (whole messages) gives exactly the batch of the per-line judge --------------

unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
payload_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**25), max_value=10**25),
              st.floats(allow_nan=False, allow_infinity=False), unicode_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text, inner, max_size=3),
    max_leaves=8,
)
time_texts = st.sampled_from([
    lambda t: t.isoformat(), lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    lambda t: t.replace(tzinfo=None).isoformat(), lambda t: t.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    # Of the shape event times have, but not times: each refuses a whole column of Arrow's cast.
    lambda t: t.strftime("%Y-02-30T%H:%M:%SZ"), lambda t: t.strftime("%Y-%m-%dT24:%M:%SZ"),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "1Z",
])


@st.composite
def plain_events(draw: st.DrawFn) -> bytes:
    """An event as adapters publish it, its id often shared with another line (same or other
    content), its time within or beyond the live and backfill bounds."""
    origin = draw(st.sampled_from(["live", "backfill", None]))
    seconds = draw(st.one_of(st.integers(min_value=-400, max_value=400), st.integers(min_value=-400, max_value=400),
                             st.integers(min_value=-(10**6), max_value=10**6),
                             st.integers(min_value=-(10**10), max_value=10**10)))
    ingest = NOW - timedelta(seconds=draw(st.integers(min_value=0, max_value=3)))
    meta: dict[str, Any] = {"parser_version": "v1"}
    if origin:
        meta["origin"] = origin
    if draw(st.booleans()):
        meta["raw_checksum"] = draw(unicode_text)
    document = {
        "event_id": f"e-{draw(st.integers(min_value=0, max_value=5))}",
        "source": draw(st.sampled_from(["fuzz"] * 9 + ["other"])),
        "type": draw(st.sampled_from(["trade", "quote"])),
        "timestamp": draw(time_texts)(NOW + timedelta(microseconds=draw(st.integers(0, 999_999)),
                                                      seconds=seconds)),
        "ingest_time": draw(time_texts)(ingest),
        "payload": draw(st.dictionaries(unicode_text, payload_values, max_size=4)),
        "meta": meta,
    }
    return json.dumps(document, ensure_ascii=draw(st.sampled_from([False, False, False, True]))).encode()


@st.composite
def plain_messages(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    batch = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        lines = draw(st.lists(plain_events(), min_size=1, max_size=6))
        if draw(st.integers(min_value=0, max_value=5)) == 0:  # now and then one line of another kind
            lines.insert(draw(st.integers(min_value=0, max_value=len(lines))),
                         draw(st.one_of(garbage, st.just(b""), st.just(b"  "), event_documents(99))))
        batch.append(("qraft.raw.fuzz", b"\n".join(lines)))
    return batch


# Backfill bounds of days, not a century, so that the generated times cross them.
BOUNDS = EventTimeBounds(timedelta(seconds=300), timedelta(days=7), timedelta(days=5))


@FUZZ
@given(batch=st.one_of(plain_messages(), messages()))
def test_the_compiled_path_gives_the_batch_of_the_per_line_judge(batch):
    compiled = land_batch(batch, now=NOW, bounds=BOUNDS)
    judged = land_batch(batch, now=NOW, bounds=BOUNDS, compiled=False)
    assert_frame_equal(compiled.raw_events, judged.raw_events)
    assert_frame_equal(compiled.dead_letters, judged.dead_letters)


# -- payloads stored as sent: a message whose first payload is canonical (as adapters write it) --

# Payload texts of flat objects, each spliced into an event line as it is: canonical ones and every
# way a text can decode to the same object yet not be what `json.dumps(sort_keys=True)` writes.
HOSTILE_PAYLOADS = [
    '{"a":1,"b":"x"}', '{"b":"x","a":1}', '{"a":1,"a":2,"b":"x"}', '{"a":1,"b":"x","a":1}',
    '{"a":"\\u00e9","b":"x"}', '{"a":"é","b":"x"}', '{"a":"\\/","b":"x"}', '{"a":"\\"\\\\\\n","b":"x"}',
    '{"a":1e5,"b":"x"}', '{"a":1.0,"b":"x"}', '{"a":-0.0,"b":"x"}', '{"a":-0,"b":"x"}', '{"a":1E5,"b":"x"}',
    '{"a":1.50,"b":"x"}', '{"a":1e999,"b":"x"}', '{"a":{"c":1},"b":"x"}', '{"a":[1,2],"b":"x"}',
    '{"a": 1,"b":"x"}', '{ "a":1,"b":"x"}', '{"a":1,"b":"x" }', '{"a":true,"b":null}', '{"a":false,"b":""}',
    '{"a":123456789012345678901234567890,"b":"x"}', '{"a":1}', '{"a":1,"b":"x","c":3}', '{}', '[1]', '"a"',
    '{"a":"\\t\\r\\b\\f","b":"\\u001f"}', '{"a":"\x7f","b":"x"}', '{"A":1,"a":1}', '{"a":1,"A":1}',
    '{"a-b":1,"a_b":2}', '{"a b":1,"b":"x"}',
]


def _event_line(n: int, payload: str, event_id: str | None = None) -> bytes:
    return (f'{{"event_id":"{event_id or f"e-{n % 7}"}","source":"fuzz","type":"t",'
            f'"timestamp":"2026-01-05T00:59:{n % 60:02d}Z","ingest_time":"2026-01-05T01:00:00Z",'
            f'"payload":{payload},"meta":{{"parser_version":"v1"}}}}').encode()


def test_payloads_are_stored_as_re_encoding_writes_them_whatever_was_sent():
    texts = ['{"a":1,"b":"x"}', *HOSTILE_PAYLOADS]
    batch = [("qraft.raw.fuzz", b"\n".join(_event_line(n, text, str(n)) for n, text in enumerate(texts)))]
    compiled = land_batch(batch, now=NOW)
    judged = land_batch(batch, now=NOW, compiled=False)
    assert_frame_equal(compiled.raw_events, judged.raw_events)
    assert_frame_equal(compiled.dead_letters, judged.dead_letters)
    kept = dict(zip(compiled.raw_events["event_id"], compiled.raw_events["payload"], strict=True))
    refused = {texts[int(n)] for n in compiled.dead_letters["event_id"]}
    assert refused == {'{"a":1e999,"b":"x"}', "[1]", '"a"'}
    assert kept == {str(n): json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
                    for n, text in enumerate(texts) if text not in refused}
    assert [kept[str(texts.index(text))] for text in ('{"b":"x","a":1}', '{"a":1,"a":2,"b":"x"}',
                                                      '{"a":"é","b":"x"}', '{"a":1e5,"b":"x"}', '{"a":-0,"b":"x"}')] \
        == ['{"a":1,"b":"x"}', '{"a":2,"b":"x"}', '{"a":"\\u00e9","b":"x"}', '{"a":100000.0,"b":"x"}', '{"a":0,"b":"x"}']


canonical_keys = st.text(alphabet="ab_-AB09", min_size=1, max_size=3)
flat_values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(alphabet=st.characters(max_codepoint=0x7f, blacklist_categories=("Cs",)), max_size=5))


@st.composite
def canonical_first_messages(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Messages whose first payload is written canonically and whose others are canonical payloads
    of other keys, hostile payload texts, or payloads of other publishers."""
    batch = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        first = draw(st.dictionaries(canonical_keys, st.one_of(st.none(), st.integers(), st.text(max_size=3)),
                                     max_size=4))
        lines = [_event_line(0, json.dumps(first, separators=(",", ":"), sort_keys=True))]
        for _ in range(draw(st.integers(min_value=0, max_value=7))):
            payload = draw(st.dictionaries(canonical_keys, flat_values, max_size=4))
            kind = draw(st.sampled_from(["canonical", "canonical", "same keys", "hostile", "foreign"]))
            if kind == "same keys":
                payload = {key: draw(flat_values) for key in first}
            if kind == "hostile":
                text = draw(st.sampled_from(HOSTILE_PAYLOADS))
            else:
                text = json.dumps(payload, separators=(",", ":"), sort_keys=kind != "foreign",
                                  ensure_ascii=draw(st.booleans()))
            lines.append(_event_line(draw(st.integers(min_value=0, max_value=20)), text))
        batch.append(("qraft.raw.fuzz", b"\n".join(lines)))
    return batch


@FUZZ
@given(batch=canonical_first_messages())
def test_payloads_kept_as_sent_give_the_batch_of_the_per_line_judge(batch):
    compiled = land_batch(batch, now=NOW)
    judged = land_batch(batch, now=NOW, compiled=False)
    assert_frame_equal(compiled.raw_events, judged.raw_events)
    assert_frame_equal(compiled.dead_letters, judged.dead_letters)


def test_messages_of_more_key_sets_than_a_batch_checks_land_as_the_judge_lands_them():
    batch = [("qraft.raw.fuzz", b"\n".join([
        _event_line(n, f'{{"k{n}":{n},"z":"x"}}', f"a{n}"), _event_line(n, f'{{"z":"x","k{n}":{n}}}', f"b{n}"),
        _event_line(n, f'{{"k{n}":1.5,"z":"x"}}', f"c{n}")])) for n in range(40)]
    compiled = land_batch(batch, now=NOW)
    judged = land_batch(batch, now=NOW, compiled=False)
    assert_frame_equal(compiled.raw_events, judged.raw_events)
    assert compiled.landed == 120 and compiled.dead_lettered == 0
    assert compiled.raw_events.filter(pl.col("event_id") == "b39")["payload"].item() == '{"k39":39,"z":"x"}'
