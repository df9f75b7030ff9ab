"""The folder watcher on real files that are still being written."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from qraft_core.adapters import watcher as watcher_module
from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig


def drained(bus: MemoryBus) -> list[Any]:
    """Event ids (or dead-letter reasons) published since the last call."""
    out = []
    while bus.queue:
        for line in bus.queue.popleft().data.split(b"\n"):
            body = json.loads(line)
            letter = body.get("qraft_dead_letter")
            out.append(("dead", letter["reason"]) if letter else body["event_id"])
    return out


def watcher(folder: Path, state: Path, pattern: str, **options: Any) -> Any:
    source = SourceConfig(name="drop", type="watcher", endpoint=str(folder),
                          options={"pattern": pattern, "id_field": "id", "time_field": "ts", **options})
    return build_adapter(source, state)


def line(i: int) -> bytes:
    return json.dumps({"id": i, "ts": 1767571200 + i}).encode() + b"\n"


def test_jsonl_partial_lines_wait_for_their_newline_and_restart_resumes(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "a.jsonl"
    bus = MemoryBus()
    adapter = watcher(folder, state, "*.jsonl")

    target.write_bytes(line(1) + line(2) + line(3)[:10])
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:1", "drop:2"]

    with target.open("ab") as handle:
        handle.write(line(3)[10:] + b"{not json}\n" + line(4)[:-1])
    asyncio.run(adapter.scan(bus))
    reason = "line is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert drained(bus) == ["drop:3", ("dead", reason)]

    with target.open("ab") as handle:
        handle.write(b"\n")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:4"]

    restarted = watcher(folder, state, "*.jsonl")
    asyncio.run(restarted.scan(bus))
    assert drained(bus) == []
    with target.open("ab") as handle:
        handle.write(line(5))
    asyncio.run(restarted.scan(bus))
    assert drained(bus) == ["drop:5"]

    target.write_bytes(line(9))  # replaced by a shorter file: read from its start
    asyncio.run(restarted.scan(bus))
    assert drained(bus) == ["drop:9"]


def test_csv_header_and_rows_arrive_in_pieces(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "b.csv"
    bus = MemoryBus()
    adapter = watcher(folder, state, "*.csv", batch_size=1)
    target.write_bytes(b"id,t")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == []
    with target.open("ab") as handle:
        handle.write(b"s\n1,1767571200000\n2,17675712")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:1"]
    with target.open("ab") as handle:
        handle.write(b"01000\n3\n")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:2", ("dead", "CSV row has 1 values for 2 columns")]
    saved = json.loads((state / "drop.watch.json").read_text())
    assert saved["files"][str(target.resolve())]["header"] == ["id", "ts"]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_csv_lines_longer_than_a_read_chunk_in_all_are_read_whatever_ends_them(tmp_path, monkeypatch, end) -> None:
    """A CR-only file (classic Mac) over a read chunk was never read at all; a CRLF cut by a chunk
    between its CR and LF is one line end, not two."""
    monkeypatch.setattr(watcher_module, "READ_CHUNK_BYTES", 20)  # the first chunk of the CRLF file ends on a CR
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "mac.csv"
    rows = [b"id,ts"] + [b"%d,%d" % (i, 1767571200 + i) for i in range(1, 9)]
    target.write_bytes(end.join(rows))  # the last line without its line end: it waits for the file to settle
    bus = MemoryBus()
    adapter = watcher(folder, state, "*.csv")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == [f"drop:{i}" for i in range(1, 8)]
    with target.open("ab") as handle:
        handle.write(end)
    asyncio.run(adapter.scan(bus))
    # A CR as the file's last byte may be the first half of a CRLF: that line is read once the file settles.
    assert drained(bus) == ([] if end == b"\r" else ["drop:8"])
    past = time.time() - 3600
    os.utime(target, (past, past))
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == (["drop:8"] if end == b"\r" else [])


def test_parquet_is_read_once_complete_and_new_files_are_found(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    bus = MemoryBus()
    adapter = watcher(folder, state, "*.parquet")
    frame = pl.DataFrame({"id": [1, 2, 3], "ts": [1767571200000000, 1767571201000000, 1767571202000000]})
    complete = tmp_path / "full.parquet"
    frame.write_parquet(complete)
    data = complete.read_bytes()
    partial = folder / "c.parquet"
    partial.write_bytes(data[: len(data) // 2])
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == []
    partial.write_bytes(data)
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:1", "drop:2", "drop:3"]
    frame.head(1).with_columns(pl.lit(7).alias("id")).write_parquet(folder / "d.parquet")
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == ["drop:7"]


def test_run_polls_until_stopped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(line(1))

    async def scenario() -> list[Any]:
        bus, stop = MemoryBus(), asyncio.Event()
        adapter = watcher(folder, tmp_path / "state", "*.jsonl", interval_s=0.02)
        task = asyncio.create_task(adapter.run(bus, stop))
        for _ in range(200):
            if bus.queue:
                break
            await asyncio.sleep(0.01)
        (folder / "b.jsonl").write_bytes(line(2))
        for _ in range(200):
            if len(bus.queue) == 2:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        return drained(bus)

    assert asyncio.run(scenario()) == ["drop:1", "drop:2"]


def test_a_quoted_csv_field_holding_line_breaks_is_one_row_even_when_it_arrives_in_pieces(tmp_path: Path) -> None:
    """Before, the watcher split CSV at every line end: the field was cut at its first line break without a word,
    and its next line became a dead letter of its own."""
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "notes.csv"
    bus = MemoryBus()
    adapter = watcher(folder, state, "*.csv")
    target.write_bytes(b'id,ts,note\n1,1767571201,"first line\r\n')
    asyncio.run(adapter.scan(bus))
    assert bus.published() == ([], [])  # the quote is still open: the row waits for the rest of it
    waiting = (state / "drop.watch.json").stat().st_ino  # a new file at each write
    asyncio.run(adapter.scan(bus))
    assert (state / "drop.watch.json").stat().st_ino == waiting  # and waiting changes no state
    with target.open("ab") as handle:
        handle.write(b'second ""line""\n"\n2,1767571202,ok\n')
    asyncio.run(adapter.scan(bus))
    events, letters = bus.published()
    assert [event["payload"] for event in events] == [
        {"id": "1", "ts": "1767571201", "note": 'first line\r\nsecond "line"'},
        {"id": "2", "ts": "1767571202", "note": "ok"},
    ]
    assert letters == []


def test_a_csv_quote_never_closed_is_a_dead_letter_once_complete_or_once_over_a_read_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(watcher_module, "READ_CHUNK_BYTES", 64)
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    open_at_end = folder / "end.csv"
    open_at_end.write_bytes(b'id,ts\n1,1767571201\n2,"1767571202\nrest')
    long_quote = folder / "long.csv"  # 25 + 11 bytes a line: 64 bytes hold the row's first 4 lines, not its end
    long_quote.write_bytes(b'id,ts,note\n1,1767571201,"abcdefghij\n' + b"abcdefghij\n" * 9 + b"3,1767571203,ok\n")
    adapter = watcher(folder, state, "*.csv")
    bus = MemoryBus()
    assert asyncio.run(adapter.scan(bus)) == 12
    events, letters = bus.published()
    # Past the 64 bytes, the quoted row's first line is the dead letter; the lines after it are rows of
    # their own, and the row after them is read.
    unclosed = "CSV row is not CSV: a quote opened in it is not closed within 1000 lines or the 64 bytes read at once"
    assert [event["event_id"] for event in events] == ["drop:1", "drop:3"]
    assert [letter["reason"] for letter in letters] == [unclosed] + ["CSV row has 1 values for 3 columns"] * 9
    assert letters[0]["raw"] == '1,1767571201,"abcdefghij'
    bus.queue.clear()
    past = time.time() - 3600
    os.utime(open_at_end, (past, past))
    asyncio.run(adapter.scan(bus))
    assert drained(bus) == [("dead", "CSV row is not CSV: a quote opened in it is never closed"),
                            ("dead", "CSV row has 1 values for 2 columns")]
    assert asyncio.run(adapter.scan(bus)) == 0


def test_a_stray_quote_in_a_csv_still_written_costs_its_line_not_the_rows_after_it(tmp_path):
    # Before, every row after a stray opening quote waited for the file to settle (or 8 MiB), then all of
    # them were one dead letter cut to 16 KiB: the good rows were lost.
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    live = folder / "live.csv"
    rows = b"".join(b"%d,%d\n" % (n, 1767571200 + n) for n in range(3, 1100))
    live.write_bytes(b'id,ts\n1,1767571201\n2,"1767571202\n' + rows)
    adapter = watcher(folder, state, "*.csv")
    bus = MemoryBus()
    asyncio.run(adapter.scan(bus))
    events, letters = bus.published()
    assert [event["event_id"] for event in events] == [f"drop:{n}" for n in [1, *range(3, 1100)]]
    assert [(letter["reason"], letter["raw"]) for letter in letters] == [
        ("CSV row is not CSV: a quote opened in it is not closed within 1000 lines or the 8388608 bytes read "
         "at once", '2,"1767571202')]
