"""`qraft analyze` through the real pipeline on one series written the ways users' tools write it: a decimal
comma in a ";" file, Windows-1252, UTF-16 without a byte order mark, a JSON array, the date and the time of
day in columns of their own, and two files of the same name in different folders. Every copy lands every
row and gives the same findings as the plain CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from qraft_core.store import open_store

ROWS, SHIFT_AT = 900, 600
T0 = datetime(2015, 6, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


def series() -> list[tuple[datetime, float]]:
    """Seeded noise with a level shift at SHIFT_AT."""
    values = np.random.default_rng(7).normal(0.0, 1.0, ROWS)
    values[SHIFT_AT:] += 6.0
    return [(T0 + STEP * i, round(float(v), 3)) for i, v in enumerate(values)]


def write(path: Path, header: str, line: Callable[[datetime, float], str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((header + "".join(line(t, v) + "\n" for t, v in series())).encode(encoding))


def test_one_series_written_many_ways_gives_the_same_findings(tmp_path: Path) -> None:
    iso = "%Y-%m-%dT%H:%M:%SZ"
    write(tmp_path / "plain.csv", "timestamp,value\n", lambda t, v: f"{t:{iso}},{v}")
    write(tmp_path / "komma.csv", "Zeit;Wert\n", lambda t, v: f"{t:{iso}};{str(v).replace('.', ',')}")
    write(tmp_path / "excel.csv", "timestamp;température\n", lambda t, v: f"{t:{iso}};{v}", "cp1252")
    write(tmp_path / "nomark.csv", "timestamp,value\n", lambda t, v: f"{t:{iso}},{v}", "utf-16-le")
    write(tmp_path / "split.csv", "date,time,value\n", lambda t, v: f"{t:%Y-%m-%d},{t:%H:%M:%S},{v}")
    (tmp_path / "array.json").write_text(json.dumps([{"ts": f"{t:{iso}}", "value": v} for t, v in series()], indent=1))
    write(tmp_path / "a" / "cpu.csv", "timestamp,value\n", lambda t, v: f"{t:{iso}},{v}")
    write(tmp_path / "b" / "cpu.csv", "timestamp,value\n", lambda t, v: f"{t:{iso}},{v}")
    names = ["plain.csv", "komma.csv", "excel.csv", "nomark.csv", "split.csv", "array.json", "a/cpu.csv", "b/cpu.csv"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    done = subprocess.run([sys.executable, "-m", "qraft_cli", "analyze", *names, "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "left out" not in done.stderr, done.stderr
    assert "time column 'date' + 'time' (iso), one every 5min" in done.stderr
    streams = ["plain", "komma", "excel", "nomark", "split", "array", "cpu", "cpu_2"]
    findings = json.loads(done.stdout)
    found = {s: sorted((f["type"], f["timestamp"]) for f in findings if f["source_streams"] == [s]) for s in streams}
    shift = T0 + STEP * SHIFT_AT
    assert any(kind == "concept_drift" and abs(datetime.fromisoformat(at) - shift) <= 20 * STEP
               for kind, at in found["plain"]), found["plain"]
    assert all(found[s] == found["plain"] for s in streams), found
    store = open_store(f"chdb://{tmp_path / 'qraft_analyze' / 'data' / 'clickhouse'}", lock_timeout_s=60)
    with store.session():
        clean = store.select("clean_events", columns=["source", "payload"])
        dead = store.select("dead_letters", columns=["reason"])
    assert dict(clean["source"].value_counts().rows()) == dict.fromkeys(streams, ROWS)
    assert dead.height == 0, dead["reason"].to_list()
    fields = {tuple(sorted(json.loads(p))) for s, p in clean.select("source", "payload").rows() if s == "excel"}
    assert fields == {("température", "timestamp")}
