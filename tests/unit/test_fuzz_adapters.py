"""Hostile records thrown at every adapter's parser, then at the lander: nothing raises, and
every record is accounted for (an event that lands, or a dead letter with a reason)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qraft_core.adapters.base import RecordAdapter
from qraft_core.adapters.parsers import decode_json_record
from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig
from qraft_core.events import MAX_NESTING, StandardEvent
from qraft_core.lander import land_batch
from tests.unit.fuzz_strategies import (
    FUZZ,
    SLOW_FUZZ,
    database_values,
    good_line,
    hostile_lines,
    hostile_records,
    json_line,
    record_line,
    values,
)


def adapter(kind: str, state_dir: Path, endpoint: str, **options: Any) -> Any:
    source = SourceConfig(name="fuzz", type=kind, endpoint=endpoint, options=options)
    return build_adapter(source, state_dir)


def account(bus: MemoryBus, stats_published: int, stats_dead: int, records: int) -> None:
    """The adapter published one event or one dead letter per record, and the lander turns
    each into exactly one row of raw_events or dead_letters, every text of which encodes."""
    assert stats_published + stats_dead == records
    landed = land_batch([(m.subject, m.data) for m in bus.queue])
    assert landed.landed + landed.dead_lettered == records
    assert all(reason for reason in landed.dead_letters["reason"].to_list())
    for column in ("reason", "raw", "event_id", "source"):
        for text in landed.dead_letters[column].to_list():
            text.encode("utf-8")
    for text in landed.raw_events["payload"].to_list():
        json.loads(text)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), hostile_lines(count=1).map(lambda lines: lines[0])))
def test_decoding_a_record_never_raises_and_always_says_why(raw):
    record, reason = decode_json_record(raw)
    assert (record is None) == bool(reason)
    if record is not None:
        assert isinstance(record, dict)
        StandardEvent.model_validate({"event_id": "e", "source": "s", "type": "t", "timestamp": 0,
                                      "ingest_time": 0, "payload": record, "meta": {"parser_version": "v"}})


@SLOW_FUZZ
@given(lines=hostile_lines())
def test_file_adapter_reads_every_line_of_a_hostile_jsonl_file(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(b"\n".join([*lines, good_line(-1)]) + b"\n")
        file_adapter = adapter("file", Path(tmp) / "state", str(path), batch_size=3)
        bus = MemoryBus()
        stats = asyncio.run(file_adapter.run(bus))
        account(bus, stats.published, stats.dead_lettered, len(lines) + 1)
        # The good record after the hostile ones was read and published.
        assert any(b'"n":-1' in m.data.replace(b" ", b"") for m in bus.queue)


@SLOW_FUZZ
@given(rows=st.lists(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "é", "\x00", "x" * 200_000])),
                              min_size=3, max_size=3), min_size=1, max_size=6),
       latin1=st.booleans())
def test_file_adapter_reads_every_row_of_a_hostile_csv_file(rows, latin1):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        body = buffer.getvalue()
        encoded = body.encode("latin-1", "replace") if latin1 else body.encode("utf-8", "surrogatepass")
        path.write_bytes(b"timestamp,a,b\n" + encoded + b"1767571200,x,y\n")
        file_adapter = adapter("file", Path(tmp) / "state", str(path))
        bus = MemoryBus()
        stats = asyncio.run(file_adapter.run(bus))
        assert stats.published >= 1  # the good last row
        assert stats.published + stats.dead_lettered == len(rows) + 1


@SLOW_FUZZ
@given(lines=hostile_lines())
def test_watcher_reads_every_line_and_then_the_next_file(lines):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        (folder / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (folder / "b.jsonl").write_bytes(good_line(-1) + b"\n")
        watcher = adapter("watcher", Path(tmp) / "state", str(folder), batch_size=3)
        bus = MemoryBus()
        assert asyncio.run(watcher.scan(bus)) == len(lines) + 1
        account(bus, watcher.stats.published, watcher.stats.dead_lettered, len(lines) + 1)


@FUZZ
@given(lines=hostile_lines())
def test_websocket_decoder_judges_every_frame(lines):
    with tempfile.TemporaryDirectory() as tmp:
        ws = adapter("websocket", Path(tmp), "ws://127.0.0.1:1")
        frames: list[str | bytes] = [line.decode("utf-8", "surrogateescape") if i % 2 else line
                                     for i, line in enumerate(lines)]
        for frame in frames:
            ws.handle_message(frame)
        bus = MemoryBus()
        asyncio.run(ws.flush(bus))
        account(bus, ws.stats.published, ws.stats.dead_lettered, len(lines))


@FUZZ
@given(records=st.lists(st.one_of(hostile_records(), values), min_size=1, max_size=6))
def test_rest_adapter_judges_every_record_of_a_response(records):
    with tempfile.TemporaryDirectory() as tmp:
        rest = adapter("rest", Path(tmp), "http://127.0.0.1:1/api")
        body = b"[" + b",".join(record_line(r, n) if isinstance(r, dict) else json_line(r)
                                for n, r in enumerate(records)) + b"]"
        bus = MemoryBus()
        asyncio.run(rest._publish_body(bus, body))
        whole_body_refused = rest.stats.dead_lettered == 1 and rest.stats.published == 0
        if not whole_body_refused:  # only a body too deep for any JSON parser is refused whole
            account(bus, rest.stats.published, rest.stats.dead_lettered, len(records))


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(["a", "b", "payload", "timestamp"]), database_values,
                                     max_size=4), min_size=1, max_size=6))
def test_database_adapter_judges_every_row(rows):
    with tempfile.TemporaryDirectory() as tmp:
        database = adapter("database", Path(tmp), f"sqlite:///{tmp}/x.db", table="t")
        rows = [{**row, "id": n} for n, row in enumerate(rows)]
        bus = MemoryBus()
        asyncio.run(database._publish_rows(bus, [database._row(row) for row in rows]))
        account(bus, database.stats.published, database.stats.dead_lettered, len(rows))


@FUZZ
@given(payload=values, meta=st.dictionaries(st.sampled_from(["note", "extra"]), values, max_size=2),
       depth=st.integers(min_value=0, max_value=200))
def test_encoding_an_unvalidated_event_never_raises(payload, meta, depth):
    from datetime import UTC, datetime

    from qraft_core.events import EventMeta

    event = StandardEvent.model_construct(
        event_id="e\ud800" if depth % 3 == 0 else "e", source="fuzz", type="t",
        timestamp=datetime(2026, 1, 5, tzinfo=UTC), ingest_time=datetime(2026, 1, 5, tzinfo=UTC),
        payload={"p": payload, "deep": _nest(depth)},
        meta=EventMeta.model_construct(parser_version="v", raw_checksum="", origin="live", **meta),
    )
    line = event.to_json_bytes()
    line.decode("utf-8")
    batch = land_batch([("qraft.raw.fuzz", line)])
    assert batch.landed + batch.dead_lettered == 1


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_the_documented_nesting_limit():
    assert MAX_NESTING == 64
    assert RecordAdapter.origin == "backfill"
