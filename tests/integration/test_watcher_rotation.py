"""The folder watcher and files that are renamed or removed: log rotation by renaming, files deleted
once read; and the state those leave."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from qraft_core.adapters.live import JsonState
from tests.integration.test_hostile_watcher import line, scan, watcher


def settle(path: Path) -> None:
    """Make the file look untouched for an hour (no sleeping for `settle_s`)."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def saved_files(state: Path) -> list[str]:
    return sorted(Path(key).name for key in json.loads((state / "w.watch.json").read_text())["files"])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "in"
    target.mkdir()
    return target


def test_a_log_rotated_by_renaming_is_read_to_its_end_then_forgotten(folder, tmp_path):
    """Before, the lines written between the last scan and the rename were lost without a word."""
    log_file, rotated = folder / "app.jsonl", folder / "app.jsonl.1"
    log_file.write_bytes(line(1) + line(2))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1, 2], [])
    append(log_file, line(3) + line(4))
    log_file.rename(rotated)  # no longer matches *.jsonl
    log_file.write_bytes(line(5))
    assert scan(adapter) == ([3, 4, 5], [])
    append(rotated, line(6) + line(7)[:-1])  # the writer has not reopened its log yet
    assert scan(adapter) == ([6], [])
    settle(rotated)  # complete: its last line is read without a line end, and the file is forgotten
    assert scan(adapter) == ([7], [])
    assert saved_files(tmp_path / "state") == ["app.jsonl"]
    assert scan(adapter) == ([], [])
    assert adapter.stats.errors == 0


def test_a_file_renamed_to_another_name_the_pattern_matches_is_read_on_not_again(folder, tmp_path):
    (folder / "app.jsonl").write_bytes(line(1) + line(2))
    adapter = watcher(folder, tmp_path / "state", pattern="app*.jsonl")
    assert scan(adapter) == ([1, 2], [])
    append(folder / "app.jsonl", line(3))
    (folder / "app.jsonl").rename(folder / "app-2026.jsonl")
    assert scan(adapter) == ([3], [])
    assert saved_files(tmp_path / "state") == ["app-2026.jsonl"]


def test_a_replaced_or_removed_file_with_bytes_not_read_is_reported_with_their_count(folder, tmp_path, caplog):
    first, second = line(1) + line(2), line(3) + line(4)
    (folder / "app.jsonl").write_bytes(first + line(9)[:-3])  # a last line still being written
    (folder / "b.jsonl").write_bytes(second + line(8)[:-1])
    (folder / "done.jsonl").write_bytes(line(5))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1, 2, 3, 4, 5], [])
    (folder / "app.jsonl").rename(tmp_path / "archive.jsonl")  # rotated out of the folder
    (folder / "app.jsonl").write_bytes(line(6))
    (folder / "b.jsonl").unlink()
    (folder / "done.jsonl").unlink()  # read to its end: nothing to say
    assert scan(adapter) == ([6], [])
    assert adapter.stats.errors == 2
    app, b = folder / "app.jsonl", folder / "b.jsonl"
    assert (f"source w: {app} was replaced, and the file it was is not in its folder any more (moved elsewhere, "
            f"compressed or deleted): its bytes from byte {len(first)} on were not read "
            f"({len(line(9)) - 3} seen at the last scan, and any written since)") in caplog.messages
    assert (f"source w: {b} was removed before it was read to its end: its {len(line(8)) - 1} bytes "
            f"from byte {len(second)} on were not read") in caplog.messages
    assert saved_files(tmp_path / "state") == ["app.jsonl"]


def test_the_state_is_written_once_a_scan_and_after_each_full_batch_and_drops_files_gone(
    folder, tmp_path, monkeypatch
):
    """Before, every file read rewrote the whole state, which kept every file ever seen: 4,000 one-line
    files took 76 s, 16 times as long as 1,000."""
    writes: list[int] = []
    real_save = JsonState.save
    monkeypatch.setattr(JsonState, "save", lambda state, data: (writes.append(len(data["files"])),
                                                                 real_save(state, data))[1])
    for n in range(40):
        (folder / f"f{n:02d}.jsonl").write_bytes(line(n))
    adapter = watcher(folder, tmp_path / "state", batch_size=2)
    assert scan(adapter) == (list(range(40)), [])
    assert writes == [40]
    assert scan(adapter) == ([], []) and writes == [40]  # nothing new: nothing written
    for n in range(1, 40):
        (folder / f"f{n:02d}.jsonl").unlink()
    append(folder / "f00.jsonl", line(100) + line(101) + line(102))
    assert scan(adapter) == ([100, 101, 102], [])
    assert writes == [40, 1, 1]  # the full batch of two, then the scan's end
    assert saved_files(tmp_path / "state") == ["f00.jsonl"]


def test_an_export_read_to_its_end_and_renamed_over_is_read_again_without_an_error(folder, tmp_path, caplog):
    # The safe way to rewrite an export: write a new file, rename it over the old one. Every byte of the
    # old one had been read, so nothing is counted as an error (before, each rewrite counted one).
    export = folder / "export.jsonl"
    export.write_bytes(line(1) + line(2))
    adapter = watcher(folder, tmp_path / "state")
    assert scan(adapter) == ([1, 2], [])
    staged = tmp_path / "export.jsonl.tmp"
    staged.write_bytes(line(1) + line(2) + line(3))
    os.replace(staged, export)
    assert scan(adapter) == ([1, 2, 3], [])
    assert adapter.stats.errors == 0
    assert (f"source w: {export} was replaced after it was read to its end; reading the new file from its start"
            in caplog.messages)
