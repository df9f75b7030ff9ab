"""`qraft analyze` through the real pipeline on one series written the ways users' tools write it: a decimal
comma in a ";" file, Windows-1252, UTF-16 without a byte order mark, a JSON array, the date and the time of
day in columns of their own, two files of the same name in different folders, dates as a spreadsheet's
serial day numbers, local times with a zone name, a logger's comment lines above a header and blanks around
its values, and Parquet with a column of bytes. Every copy lands every row; the text copies give the same
findings as the plain CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from qraft_core.store import open_store

ROWS, SHIFT_AT = 900, 600
T0 = datetime(2015, 6, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
SHEET_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def series() -> list[tuple[datetime, float]]:
    """Seeded noise with a level shift at SHIFT_AT."""
    values = np.random.default_rng(7).normal(0.0, 1.0, ROWS)
    values[SHIFT_AT:] += 6.0
    return [(T0 + STEP * i, round(float(v), 3)) for i, v in enumerate(values)]


def write(path: Path, header: str, line: Callable[[datetime, float], str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((header + "".join(line(t, v) + "\n" for t, v in series())).encode(encoding))


def analyzed(tmp_path: Path, names: list[str], streams: list[str]) -> tuple[str, pl.DataFrame]:
    """Run `qraft analyze --json` on the files; check the plain CSV's shift is found and every stream
    gives its findings, and that nothing was dead-lettered. Returns stderr and the clean events
    (source, timestamp, payload)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    done = subprocess.run([sys.executable, "-m", "qraft_cli", "analyze", *names, "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "left out" not in done.stderr, done.stderr
    findings = json.loads(done.stdout)
    found = {s: sorted((f["type"], f["timestamp"]) for f in findings if f["source_streams"] == [s]) for s in streams}
    shift = T0 + STEP * SHIFT_AT
    assert any(kind == "concept_drift" and abs(datetime.fromisoformat(at) - shift) <= 20 * STEP
               for kind, at in found["plain"]), found["plain"]
    assert all(found[s] == found["plain"] for s in streams), found
    store = open_store(f"chdb://{tmp_path / 'qraft_analyze' / 'data' / 'clickhouse'}", lock_timeout_s=60)
    with store.session():
        clean = store.select("clean_events", columns=["source", "timestamp", "payload"])
        dead = store.select("dead_letters", columns=["reason"])
    assert dead.height == 0, dead["reason"].to_list()
    return done.stderr, clean


def test_one_series_written_many_ways_gives_the_same_findings(tmp_path: Path) -> None:
    write(tmp_path / "plain.csv", "timestamp,value\n", lambda t, v: f"{t:{ISO}},{v}")
    write(tmp_path / "komma.csv", "Zeit;Wert\n", lambda t, v: f"{t:{ISO}};{str(v).replace('.', ',')}")
    write(tmp_path / "excel.csv", "timestamp;température\n", lambda t, v: f"{t:{ISO}};{v}", "cp1252")
    write(tmp_path / "nomark.csv", "timestamp,value\n", lambda t, v: f"{t:{ISO}},{v}", "utf-16-le")
    write(tmp_path / "split.csv", "date,time,value\n", lambda t, v: f"{t:%Y-%m-%d},{t:%H:%M:%S},{v}")
    (tmp_path / "array.json").write_text(json.dumps([{"ts": f"{t:{ISO}}", "value": v} for t, v in series()], indent=1))
    write(tmp_path / "a" / "cpu.csv", "timestamp,value\n", lambda t, v: f"{t:{ISO}},{v}")
    write(tmp_path / "b" / "cpu.csv", "timestamp,value\n", lambda t, v: f"{t:{ISO}},{v}")
    names = ["plain.csv", "komma.csv", "excel.csv", "nomark.csv", "split.csv", "array.json", "a/cpu.csv", "b/cpu.csv"]
    streams = ["plain", "komma", "excel", "nomark", "split", "array", "cpu", "cpu_2"]
    stderr, clean = analyzed(tmp_path, names, streams)
    assert "time column 'date' + 'time' (iso), one every 5min" in stderr
    assert dict(clean["source"].value_counts().rows()) == dict.fromkeys(streams, ROWS)
    fields = {tuple(sorted(json.loads(p))) for s, p in clean.select("source", "payload").rows() if s == "excel"}
    assert fields == {("température", "timestamp")}


def test_one_series_written_more_ways_lands_every_row_and_gives_the_same_findings(tmp_path: Path) -> None:
    paris = ZoneInfo("Europe/Paris")
    write(tmp_path / "plain.csv", "timestamp,value\n", lambda t, v: f"{t:{ISO}},{v}")
    write(tmp_path / "sheet.csv", "Date,value\n", lambda t, v: f"{(t - SHEET_EPOCH) / timedelta(days=1):.10f},{v}")
    write(tmp_path / "paris.csv", "time,value\n", lambda t, v: f"{t.astimezone(paris):%Y-%m-%d %H:%M} Europe/Paris,{v}")
    write(tmp_path / "logger.csv", "# exported by the logger\n\n time , value \n", lambda t, v: f" {t:{ISO}} , {v} ")
    pl.DataFrame({"timestamp": [t for t, _ in series()], "value": [v for _, v in series()],
                  "tag": [b"\xff\x00"] * ROWS}).write_parquet(tmp_path / "bytes.parquet")
    names = ["plain.csv", "sheet.csv", "paris.csv", "logger.csv", "bytes.parquet"]
    texts = ["plain", "sheet", "paris", "logger"]
    stderr, clean = analyzed(tmp_path, names, texts)
    assert "time column 'Date' (excel), one every 5min (times without a zone, read as UTC)" in stderr
    assert dict(clean["source"].value_counts().rows()) == dict.fromkeys([*texts, "bytes"], ROWS)
    firsts = clean.group_by("source").agg(pl.col("timestamp").min())["timestamp"].to_list()
    assert {t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in firsts} == {T0}
