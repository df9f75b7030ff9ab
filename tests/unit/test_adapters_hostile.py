"""Each adapter judges each record on its own: exact reasons for the hostile cases, and the
records after them are read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters import watcher as watcher_module
from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

GOOD = b'{"timestamp": 1767571200, "v": 1}'
HOSTILE = [
    (b'{"timestamp": 1767571200, "v": ' + b"[" * 2000 + b"]" * 2000 + b"}", "is nested deeper than 64 levels"),
    (b'{"timestamp": 1767571200, "v": "\\ud800"}',
     "is not usable: record.v holds text that is not valid Unicode (a lone surrogate)"),
    (b'{"timestamp": 1767571200, "\\udfff": 1}',
     "is not usable: record key holds text that is not valid Unicode (a lone surrogate)"),
    (b'{"timestamp": 1767571200, "v": "caf\xe9"}', "is not UTF-8: invalid continuation byte at byte 35"),
    (b'{"timestamp": 1767571200, "v": 1e999}', "is not JSON: 1e999 is not a finite number"),
    (b'{"timestamp": 1767571200, "v": "' + b"x" * 300_000 + b'"}', "is oversize: 300034 bytes > 262144"),
    (b'{"timestamp": 1e400}', "is not JSON: 1e400 is not a finite number"),
]


def adapter(kind: str, endpoint: str, state: Path, **options: Any) -> Any:
    return build_adapter(SourceConfig(name="h", type=kind, endpoint=endpoint, options=options), state)


def envelopes(bus: MemoryBus) -> tuple[list[str], int]:
    events, letters = bus.published()
    return [letter["reason"] for letter in letters], len(events)


def test_file_adapter_dead_letters_each_hostile_line_and_reads_on(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join([line for line, _ in HOSTILE] + [GOOD]) + b"\n")
    bus = MemoryBus()
    stats = asyncio.run(adapter("file", str(path), tmp_path / "state").run(bus))
    reasons, events = envelopes(bus)
    assert reasons == [f"line {n + 1} {reason}" for n, (_, reason) in enumerate(HOSTILE)]
    assert (events, stats.published, stats.dead_lettered) == (1, 1, len(HOSTILE))


def test_websocket_frames_are_judged_the_same_way(tmp_path):
    ws = adapter("websocket", "ws://127.0.0.1:1", tmp_path)
    for line, _ in HOSTILE:
        ws.handle_message(line)
    ws.handle_message(GOOD.decode())
    bus = MemoryBus()
    asyncio.run(ws.flush(bus))
    reasons, events = envelopes(bus)
    assert reasons == [f"frame {reason}" for _, reason in HOSTILE]
    assert events == 1


def test_watcher_dead_letters_a_line_longer_than_its_read_chunk_and_reads_on(tmp_path, monkeypatch):
    monkeypatch.setattr(watcher_module, "READ_CHUNK_BYTES", 4096)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b'{"v": "' + b"x" * 10_000 + b'"}\n' + GOOD + b"\n")
    (folder / "b.jsonl").write_bytes(GOOD.replace(b"1}", b"2}") + b"\n")
    watcher = adapter("watcher", str(folder), tmp_path / "state")
    bus = MemoryBus()
    assert asyncio.run(watcher.scan(bus)) == 3
    reasons, events = envelopes(bus)
    assert reasons == ["line is oversize: 10010 bytes, more than the 4096 read at once"]
    assert events == 2
    # The position is past the long line: a second scan reads nothing again.
    assert asyncio.run(watcher.scan(MemoryBus())) == 0


def test_a_csv_file_with_a_latin1_row_dead_letters_that_row_only(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"timestamp,city\n1767571200,Z\xfcrich\n1767571201,Bern\n")
    bus = MemoryBus()
    stats = asyncio.run(adapter("file", str(path), tmp_path / "state").run(bus))
    reasons, events = envelopes(bus)
    assert reasons == ["CSV row 1 is not UTF-8 (byte 12)"]
    assert (events, stats.published) == (1, 1)


@pytest.mark.parametrize("value", [10**5000, float("nan"), "\ud800", b"\xff\x00"],
                         ids=["huge_int", "nan", "surrogate", "bytes"])
def test_database_rows_holding_hostile_values_are_dead_letters(tmp_path, value):
    database = adapter("database", f"sqlite:///{tmp_path}/x.db", tmp_path, table="t", time_field="ts")
    bus = MemoryBus()
    rows = [{"id": 1, "ts": 1767571200, "v": value}, {"id": 2, "ts": 1767571200, "v": 1}]
    asyncio.run(database._publish_rows(bus, [database._row(row) for row in rows]))
    reasons, events = envelopes(bus)
    assert len(reasons) == (0 if isinstance(value, bytes) else 1)  # bytes are carried as base64
    assert events == (2 if isinstance(value, bytes) else 1)
