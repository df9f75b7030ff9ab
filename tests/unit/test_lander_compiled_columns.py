"""The text columns of compiled rows (`landing.compiled`): each message's values are joined into one
text and a batch's column is built on one buffer, so values that are empty, non-ASCII or spelled
with escapes, and messages of different sizes, must come out as the line-by-line judge reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from polars.testing import assert_frame_equal

from qraft_core.events import MAX_RECORD_BYTES
from qraft_core.lander import land_batch
from qraft_core.landing.compiled import CompiledRows, line_count

NOW = "2026-01-05T00:00:00Z"


def line(event_id: str, **changes: Any) -> bytes:
    document: dict[str, Any] = {
        "event_id": event_id, "source": "s", "type": "trade", "timestamp": NOW, "ingest_time": NOW,
        "payload": {"p": 1}, "meta": {"parser_version": "v1", "raw_checksum": f"sum-{event_id}"},
    }
    document.update(changes)
    return json.dumps(document, ensure_ascii=False).encode()


def test_text_values_of_compiled_rows_are_the_values_of_the_lines() -> None:
    messages = [
        ("qraft.raw.s", b"\n".join([
            line("a-1"),
            line("a\n2", type="tab\there"),  # JSON escapes decode to control characters
            line('a"3\\', meta={"parser_version": "v/1"}),  # no raw_checksum: the empty default
            line("a-4", type="\u00e9v\u00e9nement", meta={"parser_version": "v1", "origin": "backfill"}),
        ])),
        ("qraft.raw.s", line("b-\U0001f600")),  # a message of one row between longer ones
        ("qraft.raw.s", b"\n".join([line("c-1", meta={"parser_version": "v2"}), line("c-2")])),
    ]
    rows_of_messages, offset = CompiledRows(), 0
    for _, data in messages:  # every line is one the compiled path takes, none is left to the judge
        assert rows_of_messages.add("s", data, line_count(data), offset, MAX_RECORD_BYTES) == []
        offset += line_count(data)

    landed_at = datetime(2026, 1, 5, 0, 1, tzinfo=UTC)
    compiled = land_batch(messages, now=landed_at)
    judged_line_by_line = land_batch(messages, now=landed_at, compiled=False)

    assert_frame_equal(compiled.raw_events, judged_line_by_line.raw_events)
    assert compiled.dead_lettered == 0
    rows = compiled.raw_events.select("event_id", "type", "parser_version", "raw_checksum").rows()
    assert rows == [
        ("a-1", "trade", "v1", "sum-a-1"),
        ("a\n2", "tab\there", "v1", "sum-a\n2"),
        ('a"3\\', "trade", "v/1", ""),
        ("a-4", "\u00e9v\u00e9nement", "v1", ""),
        ("b-\U0001f600", "trade", "v1", "sum-b-\U0001f600"),
        ("c-1", "trade", "v2", ""),
        ("c-2", "trade", "v1", "sum-c-2"),
    ]


def test_a_column_of_empty_values_keeps_one_row_per_event() -> None:
    messages = [("qraft.raw.s", b"\n".join(line(f"e-{n}", meta={"parser_version": "v1"}) for n in range(3)))]

    batch = land_batch(messages)

    assert batch.raw_events["raw_checksum"].to_list() == ["", "", ""]
    assert batch.raw_events["event_id"].to_list() == ["e-0", "e-1", "e-2"]
