"""Damaged .gz (and Parquet) files through `qraft analyze`'s file source: every whole line before the damage is read,
the damage is one dead letter saying what was lost, and no line cut by it is read as a whole one."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from qraft_core.adapters.file import read_records
from qraft_core.config import ConfigError
from tests.unit.test_hostile_files_more import analysed

T0 = datetime(2014, 3, 1, tzinfo=UTC)


def csv_text(rows: int = 3000) -> str:
    values = np.random.default_rng(3).normal(0.0, 50.0, rows)
    return "timestamp,value\n" + "".join(
        f"{T0 + timedelta(minutes=5 * i):%Y-%m-%dT%H:%M:%SZ},{v:.3f}\n" for i, v in enumerate(values))


def packed(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)  # the same bytes on every run


def decompressed(data: bytes) -> bytes:
    """What a decompressor gets out of `data` up to its damage."""
    readable = zlib.decompressobj(wbits=31)
    out = b""
    for at in range(0, len(data), 512):
        try:
            out += readable.decompress(data[at:at + 512])
        except zlib.error:
            break
    return out


def test_a_gzip_file_cut_short_reads_every_whole_line_before_the_cut(tmp_path: Path) -> None:
    text = csv_text()
    data = packed(text)[: len(packed(text)) * 2 // 3]
    (tmp_path / "cut.csv.gz").write_bytes(data)
    profile, times, reasons = analysed(tmp_path / "cut.csv.gz", tmp_path)
    there = decompressed(data)
    whole = there[: there.rindex(b"\n") + 1]
    # Before, the whole file was refused ("cannot be read: Compressed file ended before the
    # end-of-stream marker was reached"), though two thirds of it were there.
    assert (profile.rows, len(times)) == (1988, 1988) == (whole.count(b"\n") - 1,) * 2
    assert times[-1] == T0 + timedelta(minutes=5 * 1987)
    assert reasons == [f"the compressed data ends early (the file is cut short), {len(there)} bytes into its text; "
                       f"a line cut short ({len(there) - len(whole)} bytes) is dropped"]


def test_a_corrupt_member_after_a_whole_one_costs_only_its_own_lines(tmp_path: Path) -> None:
    # Two members end to end (as appending to a .gz writes): the second one's first block type is
    # one deflate does not have. Before: zlib.error escaped and `qraft analyze` ended with a traceback.
    lines = csv_text(2000).splitlines(keepends=True)
    first, second = packed("".join(lines[:1001])), bytearray(packed("".join(lines[1001:])))
    second[10] = 0xFF  # the first byte after the member's 10-byte header
    (tmp_path / "corrupt.csv.gz").write_bytes(first + bytes(second))
    profile, times, reasons = analysed(tmp_path / "corrupt.csv.gz", tmp_path)
    assert (profile.rows, len(times)) == (1000, 1000)
    assert reasons == [f"the compressed data is corrupt (Error -3 while decompressing data: invalid block type), "
                       f"{len(''.join(lines[:1001]))} bytes into its text"]


def test_bytes_after_the_compressed_data_are_ignored_with_a_dead_letter(tmp_path: Path) -> None:
    text = csv_text(500).rstrip("\n")  # the last line without a line break is still a whole line
    (tmp_path / "tail.csv.gz").write_bytes(packed(text) + b"\x00\x00 garbage")
    profile, times, reasons = analysed(tmp_path / "tail.csv.gz", tmp_path)
    # Before: refused whole ("Not a gzipped file"), as gunzip would not be.
    assert (profile.rows, len(times)) == (500, 500)
    assert reasons == [f"the bytes after the end of the compressed data are not gzip: ignored, {len(text)} bytes "
                       "into its text"]


def test_json_lines_cut_short_read_every_whole_line(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"at": f"{T0 + timedelta(seconds=i):%Y-%m-%dT%H:%M:%SZ}", "v": i % 7 - 3}) + "\n"
                    for i in range(2000))
    data = packed(lines)[:-40]
    (tmp_path / "cut.jsonl.gz").write_bytes(data)
    profile, times, reasons = analysed(tmp_path / "cut.jsonl.gz", tmp_path)
    assert profile.rows == len(times) == decompressed(data).count(b"\n") == 1990
    assert len(reasons) == 1 and reasons[0].startswith("the compressed data ends early")


def test_a_parquet_file_cut_short_is_refused_naming_the_file(tmp_path: Path) -> None:
    # Before: polars' error escaped the file source (its run ended with a traceback).
    path = tmp_path / "cut.parquet"
    pl.DataFrame({"timestamp": [T0] * 100, "value": list(range(100))}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ConfigError, match=f"^{path}: cannot be read as Parquet: "):
        list(read_records(path, "parquet", []))
