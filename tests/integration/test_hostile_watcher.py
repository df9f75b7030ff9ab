"""The folder watcher on a hostile folder: files deleted while read, still being written, not
openable, binary, empty, copied over; folders, FIFOs and symlink loops named like files."""

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
from qraft_core.adapters.live import StateNotSaved
from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig


def line(n: int) -> bytes:
    return json.dumps({"id": n, "timestamp": 1767571200 + n}).encode() + b"\n"


def watcher(folder: Path, state: Path, **options: Any) -> Any:
    return build_adapter(SourceConfig(name="w", type="watcher", endpoint=str(folder),
                                      options={"id_field": "id", **options}), state)


def scan(adapter: Any) -> tuple[list[Any], list[str]]:
    bus = MemoryBus()
    asyncio.run(adapter.scan(bus))
    published, dead = bus.published()
    events = [body["payload"]["id"] for body in published]
    letters = [letter["reason"] for letter in dead]
    return events, letters


def settle(path: Path) -> None:
    """Make the file look untouched for an hour (no sleeping for `settle_s`)."""
    past = time.time() - 3600
    os.utime(path, (past, past))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "in"
    target.mkdir()
    return target


def test_folders_fifos_symlink_loops_and_empty_files_named_like_data_are_passed_over(folder, tmp_path):
    (folder / "dir.jsonl").mkdir()
    os.mkfifo(folder / "pipe.jsonl")  # opening it would block for ever
    (folder / "loop.jsonl").symlink_to(folder / "loop.jsonl")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder loop for **
    (folder / "empty.jsonl").write_bytes(b"")
    (folder / "z.jsonl").write_bytes(line(1))
    adapter = watcher(folder, tmp_path / "state", pattern="**/*.jsonl")
    assert scan(adapter) == ([1], [])
    assert adapter.stats.errors == 0
    (folder / "empty.jsonl").write_bytes(line(2))
    assert scan(adapter) == ([2], [])


def test_a_file_that_cannot_be_opened_is_reported_once_and_read_when_it_can(folder, tmp_path, monkeypatch):
    # Root reads any file, so the refusal is the operating system's error raised by open().
    denied = folder / "a.jsonl"
    denied.write_bytes(line(1))
    (folder / "b.jsonl").write_bytes(line(2))
    real_open = Path.open

    def refusing(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "a.jsonl":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing)
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([2], [])
    assert scan(adapter) == ([], [])
    assert adapter.stats.errors == 1  # reported once, tried at every scan
    monkeypatch.setattr(Path, "open", real_open)
    assert scan(adapter) == ([1], [])


def test_a_file_deleted_between_listing_and_reading_costs_nothing(folder, tmp_path, monkeypatch):
    (folder / "a.jsonl").write_bytes(line(1))
    (folder / "b.jsonl").write_bytes(line(2))
    real_format = watcher_module.file_format

    def deleting(path: Path, fmt: str) -> str:
        if path.name == "a.jsonl":
            path.unlink()
        return real_format(path, fmt)

    monkeypatch.setattr(watcher_module, "file_format", deleting)
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([2], [])
    assert adapter.stats.errors == 0


def test_an_unfinished_last_line_waits_until_the_file_is_complete(folder, tmp_path):
    path = folder / "a.jsonl"
    path.write_bytes(line(1) + line(2)[:-5])
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1], [])
    assert scan(adapter) == ([], [])  # still being written
    with path.open("ab") as handle:
        handle.write(line(2)[-5:-1])  # the rest of the line, without its newline
    settle(path)
    assert scan(adapter) == ([2], [])
    assert scan(adapter) == ([], [])


def test_a_binary_file_is_dead_letters_with_or_without_newlines(folder, tmp_path):
    (folder / "a.jsonl").write_bytes(b"\x00\x01\xfe\xff" * 100 + b"\n" + b"\x00\xd8\xff\xe0" * 50)
    (folder / "b.jsonl").write_bytes(b"\x00\x00\x00\x00\xff\xfe" * 10)
    settle(folder / "a.jsonl")
    settle(folder / "b.jsonl")
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([], [
        "line is not UTF-8: invalid start byte at byte 2",
        "line is not UTF-8: invalid continuation byte at byte 1",
        "line is not UTF-8: invalid start byte at byte 4",
    ])
    assert scan(adapter) == ([], [])


def test_a_line_longer_than_a_read_chunk_is_a_logged_dead_letter_whatever_ends_it(folder, tmp_path, monkeypatch,
                                                                                 caplog):
    """Before, a long line in a file without LF (CR line ends, or none before the file's end) was passed over
    without a word, and with it the rest of the file."""
    monkeypatch.setattr(watcher_module, "READ_CHUNK_BYTES", 4096)
    long_line = b'{"v": "' + b"x" * 5000 + b'"}'
    (folder / "a.jsonl").write_bytes(b"\r".join([line(1)[:-1], long_line, line(2)[:-1], line(3)[:-1]]) + b"\r")
    (folder / "b.jsonl").write_bytes(line(4) + b"x" * 5000)  # its last line still being written, or cut short
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1, 2, 4], ["line is oversize: 5010 bytes, more than the 4096 read at once"])
    assert "a.jsonl: a line at byte 35 is a dead letter: line is oversize: 5010 bytes" in caplog.text
    settle(folder / "a.jsonl")
    settle(folder / "b.jsonl")
    assert scan(adapter) == ([3], ["line is oversize: 5000 bytes, more than the 4096 read at once"])
    assert "b.jsonl: a line at byte 35 is a dead letter: line is oversize: 5000 bytes" in caplog.text
    assert scan(adapter) == ([], [])


def test_a_file_copied_over_with_other_content_is_read_again_from_its_start(folder, tmp_path):
    path = folder / "a.jsonl"
    path.write_bytes(line(1) + line(2))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1, 2], [])
    inode = path.stat().st_ino
    path.write_bytes(line(7) + line(8) + line(9))  # the same file (inode), longer, other lines
    assert path.stat().st_ino == inode
    assert scan(adapter) == ([7, 8, 9], [])
    path.write_bytes(line(7) + line(8) + line(9))  # the same copy again: nothing new
    assert scan(adapter) == ([], [])
    with path.open("ab") as handle:
        handle.write(line(10))
    assert scan(adapter) == ([10], [])


def test_a_file_rewritten_in_place_with_the_same_first_lines_is_read_again_from_its_start(folder, tmp_path):
    # A regenerated export: the same first 200 lines (more than the 4 KiB of the head check), then
    # other, longer ones. Before, reading went on at the old offset, in the middle of a line: 97 rows
    # of such a file were lost and a line's tail was stored as an event of its own.
    path = folder / "export.jsonl"
    path.write_bytes(b"".join(line(n) for n in range(300)))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == (list(range(300)), [])
    with path.open("r+b") as handle:  # the same inode, rewritten
        handle.truncate(0)
        handle.write(b"".join(line(n) for n in range(200)) + b"".join(line(100_000 + n) for n in range(200)))
    assert scan(adapter) == ([*range(200), *range(100_000, 100_200)], [])
    with path.open("ab") as handle:  # appending after a rewrite reads the new lines only
        handle.write(line(7))
    assert scan(adapter) == ([7], [])


def test_a_parquet_file_that_never_becomes_readable_is_one_dead_letter(folder, tmp_path):
    path = folder / "a.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    adapter = watcher(folder, tmp_path / "state", pattern="*.parquet")
    assert scan(adapter) == ([], [])  # maybe still being written
    settle(path)
    events, letters = scan(adapter)
    assert events == [] and len(letters) == 1
    assert letters[0].startswith("a.parquet is not a readable Parquet file: ")
    assert scan(adapter) == ([], [])
    pl.DataFrame({"id": [5], "timestamp": [1767571205]}).write_parquet(path)
    assert scan(adapter) == ([5], [])


def test_the_watched_folder_going_away_is_reported_and_the_watcher_carries_on(folder, tmp_path):
    (folder / "a.jsonl").write_bytes(line(1))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1], [])
    (folder / "a.jsonl").unlink()
    folder.rmdir()
    assert scan(adapter) == ([], [])
    assert scan(adapter) == ([], [])
    assert adapter.stats.errors == 1
    folder.mkdir()
    (folder / "b.jsonl").write_bytes(line(2))
    assert scan(adapter) == ([2], [])


def test_a_file_name_that_is_not_utf8_is_read_and_remembered(folder, tmp_path):
    name = os.fsdecode(b"caf\xe9.jsonl")  # Latin-1 bytes: a lone surrogate in Python's str
    (folder / name).write_bytes(line(1))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1], [])
    restarted = watcher(folder, tmp_path / "state")
    assert scan(restarted) == ([], [])


def test_a_position_that_cannot_be_saved_stops_the_scan_instead_of_reading_again(folder, tmp_path):
    (folder / "a.jsonl").write_bytes(line(1))
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state folder belongs")
    adapter = watcher(folder, blocked)
    with pytest.raises(StateNotSaved, match="state cannot be written"):
        asyncio.run(adapter.scan(MemoryBus()))
