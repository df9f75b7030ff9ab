"""The folder watcher reads the encodings the file source reads."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig


def published(bus: MemoryBus) -> list[Any]:
    """Each event's payload (or ("dead", reason) for a dead letter) published since the last call."""
    out = []
    while bus.queue:
        for line in bus.queue.popleft().data.split(b"\n"):
            body = json.loads(line)
            letter = body.get("qraft_dead_letter")
            out.append(("dead", letter["reason"]) if letter else body["payload"])
    return out


def watcher(folder: Path, state: Path, **options: Any) -> Any:
    source = SourceConfig(name="drop", type="watcher", endpoint=str(folder),
                          options={"pattern": "*.csv", "id_field": "id", "time_field": "ts", **options})
    return build_adapter(source, state)


EXCEL_CSV = "id,ts,ville,état\r\n1,1767571200,Zürich,prêt\r\n2,1767571201,Besançon,€ reçu\r\n"


def test_cp1252_csv_lands_every_row_with_its_accents(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "export.csv"
    data = EXCEL_CSV.encode("cp1252")
    bus = MemoryBus()
    adapter = watcher(folder, state, encoding="cp1252")

    target.write_bytes(data[:40])  # the header and part of the first row
    asyncio.run(adapter.scan(bus))
    assert published(bus) == []
    with target.open("ab") as handle:
        handle.write(data[40:] + b"3,1767571202,Caf\x81,ok\r\n")  # 0x81 is no Windows-1252 character
    asyncio.run(adapter.scan(bus))
    assert published(bus) == [
        {"id": "1", "ts": "1767571200", "ville": "Zürich", "état": "prêt"},
        {"id": "2", "ts": "1767571201", "ville": "Besançon", "état": "€ reçu"},
        ("dead", "CSV row is not UTF-8: invalid start byte at byte 16"),
    ]


def test_cp1252_csv_read_as_utf8_is_dead_letters(tmp_path: Path) -> None:
    """What the option is for: by default these rows are not UTF-8."""
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    (folder / "export.csv").write_bytes(EXCEL_CSV.encode("cp1252"))
    bus = MemoryBus()
    asyncio.run(watcher(folder, state).scan(bus))
    assert published(bus) == [("dead", "CSV row is not UTF-8: invalid start byte at byte 14"),
                              ("dead", "CSV row is not UTF-8: invalid continuation byte at byte 18")]


@pytest.mark.parametrize("header", [b"id,ts,ville", b'"id","ts","ville"'], ids=["plain", "quoted"])
def test_utf8_csv_with_a_byte_order_mark_as_excel_writes_it_keeps_the_mark_out_of_the_header(tmp_path, header):
    """Before, the header's first name was "\ufeffid" and every row lacked `ts`."""
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "excel.csv"
    bus = MemoryBus()
    adapter = watcher(folder, state)
    target.write_bytes(b"\xef\xbb\xbf" + header[:4])  # the mark and part of the header
    asyncio.run(adapter.scan(bus))
    assert published(bus) == []
    with target.open("ab") as handle:
        handle.write(header[4:] + "\r\n1,1767571200,Zürich\r\n".encode())
    asyncio.run(adapter.scan(bus))
    with target.open("ab") as handle:
        handle.write("2,1767571201,Genève\r\n".encode())
    asyncio.run(watcher(folder, state).scan(bus))  # restarted: its header is the saved one
    assert published(bus) == [{"id": "1", "ts": "1767571200", "ville": "Zürich"},
                              {"id": "2", "ts": "1767571201", "ville": "Genève"}]


def test_utf8_jsonl_with_a_byte_order_mark_reads_its_first_line(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"id": 1, "ts": 1767571200}\n{"id": 2, "ts": 1767571201}\n')
    bus = MemoryBus()
    asyncio.run(watcher(folder, state, pattern="*.jsonl").scan(bus))
    assert published(bus) == [{"id": 1, "ts": 1767571200}, {"id": 2, "ts": 1767571201}]


def settled(path: Path) -> None:
    """Make the file look untouched for an hour (no sleeping for `settle_s`)."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def test_utf16_csv_is_read_whole_once_complete_then_from_where_it_stopped(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "unicode.csv"
    bus = MemoryBus()
    adapter = watcher(folder, state)

    target.write_bytes(EXCEL_CSV.encode("utf-16"))  # with its byte order mark, as Excel's "Unicode text"
    asyncio.run(adapter.scan(bus))
    assert published(bus) == []  # still being written, as far as the watcher can tell
    settled(target)
    asyncio.run(adapter.scan(bus))
    assert published(bus) == [
        {"id": "1", "ts": "1767571200", "ville": "Zürich", "état": "prêt"},
        {"id": "2", "ts": "1767571201", "ville": "Besançon", "état": "€ reçu"},
    ]
    asyncio.run(adapter.scan(bus))
    assert published(bus) == []

    with target.open("ab") as handle:
        handle.write("3,1767571202,Genève\r\n4,1767571203,Liège,ok\r\n".encode("utf-16-le"))
    settled(target)
    restarted = watcher(folder, state)
    asyncio.run(restarted.scan(bus))
    assert published(bus) == [{"id": "4", "ts": "1767571203", "ville": "Liège", "état": "ok"},
                              ("dead", "CSV row 3 has 3 fields, the header 4")]


def test_utf16_jsonl_without_byte_order_mark_is_read_once_complete(tmp_path: Path) -> None:
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "a.jsonl"
    target.write_bytes('{"id": 1, "ts": 1767571200, "ville": "Zürich"}\n{"id": 2\n'.encode("utf-16-le"))
    settled(target)
    bus = MemoryBus()
    asyncio.run(watcher(folder, state, pattern="*.jsonl").scan(bus))
    assert published(bus) == [{"id": 1, "ts": 1767571200, "ville": "Zürich"},
                              ("dead", "line 2 is not JSON: Expecting ',' delimiter: line 1 column 9 (char 8)")]


def test_utf16_tab_separated_text_as_excel_saves_unicode_text_is_read_by_its_header(tmp_path: Path) -> None:
    """Excel's "Unicode text" is UTF-16 with tabs: before, each row was one field and had no `ts`."""
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "export.txt"
    target.write_bytes(EXCEL_CSV.replace(",", "\t").encode("utf-16"))
    settled(target)
    bus = MemoryBus()
    asyncio.run(watcher(folder, state, pattern="*.txt", format="csv").scan(bus))
    assert published(bus) == [
        {"id": "1", "ts": "1767571200", "ville": "Zürich", "état": "prêt"},
        {"id": "2", "ts": "1767571201", "ville": "Besançon", "état": "€ reçu"},
    ]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_separated_otherwise_than_by_commas_is_dead_lettered_naming_its_separator(
        tmp_path: Path, separator: str) -> None:
    """Before, every row's reason was that it had no time field, which says nothing of the cause."""
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    target = folder / "export.csv"
    target.write_text(f"id{separator}ts\n1{separator}1767571200\n")
    settled(target)
    bus = MemoryBus()
    asyncio.run(watcher(folder, state).scan(bus))
    assert published(bus) == [
        ("dead", f"CSV header {f'id{separator}ts'!r} is one column: the watcher reads comma-separated CSV only, "
                 f"this file looks {separator!r}-separated (the file source reads it)")]
