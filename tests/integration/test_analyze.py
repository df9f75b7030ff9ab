"""`qraft analyze` on a metric CSV from 2014 with negative values and zeros, beside hostile files, with
no configuration and from a folder other than the project's: the real pipeline (embedded NATS, lander,
chDB, Dagster runs, cards) in a child process, one run for every file; and Ctrl-C during a run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from qraft_core.store import open_store
from qraft_core.store.base import Filter

REPO = Path(__file__).resolve().parents[2]
ROWS = 1500
SHIFT_AT, SPIKE_AT = 1000, 600
T0 = datetime(2014, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


def write_metric(path: Path) -> None:
    """Seeded noise around 0 (zeros every 50th row), a spike, then a level shift down to about -8."""
    rng = np.random.default_rng(12)
    values = rng.normal(0.0, 1.0, ROWS)
    values[SHIFT_AT:] -= 8.0
    values[SPIKE_AT] += 30.0
    values[::50] = 0.0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for i, value in enumerate(values):
            writer.writerow([(T0 + STEP * i).strftime("%Y-%m-%dT%H:%M:%SZ"), f"{value:.4f}"])


def write_hostile(folder: Path) -> dict[str, int]:
    """Files that analyze reads or leaves out; returns the rows each readable one lands."""
    rows = [(T0 + STEP * i, (i % 9) - 4) for i in range(300)]
    lines = [f"{t:%Y-%m-%d %H:%M:%S};{v}" for t, v in rows]
    # A byte order mark, `;`, CRLF, and a last row of the wrong width (a dead letter).
    (folder / "semi colon.v2 (ünïcode).csv").write_bytes(
        ("\r\n".join(["when;value", *lines, "2014-03-02 01:00:00;1;2"]) + "\r\n").encode("utf-8-sig"))
    # JSON lines, hourly, with a line that is not JSON and one without a time (two dead letters).
    records = [json.dumps({"ts": int((T0 + timedelta(hours=i)).timestamp() * 1000), "load": v, "host": "ab"[i % 2]})
               for i, (_, v) in enumerate(rows)]
    (folder / "hosts.jsonl").write_text("\n".join([*records[:100], "{oops", '{"load": 1}', *records[100:]]) + "\n")
    (folder / "empty.csv").write_text("")
    (folder / "thousands.csv").write_text("timestamp,value\n" + "\n".join(f'{t.isoformat()},"{1000 + 7 * i:,}"'
                                                                            for i, (t, _) in enumerate(rows)))
    return {"semi_colon_v2_unicode": 300, "hosts": 300, "thousands": 300}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and str(os.getpid()) != entry.name:
            found.append(command)
    return found


def test_analyze_a_2014_metric_with_negatives_and_zeros_beside_hostile_files(tmp_path: Path) -> None:
    data = tmp_path / "cpu_2014.csv"
    write_metric(data)
    landed_rows = {"cpu_2014": ROWS, **write_hostile(tmp_path)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    names = ["cpu_2014.csv", "semi colon.v2 (ünïcode).csv", "hosts.jsonl", "empty.csv", "thousands.csv"]
    done = subprocess.run(
        [sys.executable, "-m", "qraft_cli", "analyze", *names, "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    findings = json.loads(done.stdout)
    assert findings, done.stderr[-3000:]
    for finding in findings:
        assert {"pattern_id", "type", "timestamp", "source_streams", "confidence"} <= set(finding)
        assert finding["source_streams"][0] in landed_rows
        assert finding["timestamp"].startswith("2014-03")
    shift = T0 + STEP * SHIFT_AT
    drifts = [f for f in findings if f["type"] == "concept_drift" and f["source_streams"] == ["cpu_2014"]]
    assert any(abs(datetime.fromisoformat(f["timestamp"]) - shift) <= 40 * STEP for f in drifts), findings
    # Hourly data beside 5-minute data: windows of 12 hourly bars, each file with its own bars, one run.
    assert "windows of 720 min in 1 run(s)" in done.stderr and "bars of 5min" in done.stderr
    assert "bars of 1h" in done.stderr
    assert "left out: empty.csv: is empty" in done.stderr
    # "1,007" quoted in a comma-separated file: a number with a thousands separator.
    assert "thousands.csv → stream thousands" in done.stderr
    # The configuration was written next to the data, and nothing the command started is left running.
    output = tmp_path / "qraft_analyze"
    assert sorted(p.name for p in (output / "config").iterdir()) == [
        "cards.yaml", "detectors.yaml", "preprocessing.yaml", "qraft.yaml", "sources.yaml"]
    assert processes_mentioning(str(output)) == []
    store = open_store(f"chdb://{output / 'data' / 'clickhouse'}", lock_timeout_s=60)
    with store.session():
        # Zeros and negative values are data, not dead letters; malformed records are, with their reason.
        clean = store.select("clean_events", columns=["source"])["source"].value_counts()
        assert dict(clean.rows()) == landed_rows
        reasons = sorted(store.select("dead_letters", columns=["reason"])["reason"].to_list())
        cards = store.select("pattern_cards", where=[Filter("lang", "=", "en")], columns=["markdown"])
    assert reasons == ["adapter: CSV row 301 has 3 fields, the header 2", "adapter: line 101 is not JSON: "
                       "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
                       "adapter: record has no time field 'ts'"], reasons
    assert cards.height == len(findings)
    for markdown in cards["markdown"]:
        text = markdown.lower()
        assert "value" in text or "load" in text
        assert not [w for w in ("trade", "price", "volume", "buy_ratio", "volatility") if w in text], markdown


def test_ctrl_c_during_a_run_stops_analyze_cleanly(tmp_path: Path) -> None:
    # Two files a year apart: two time spans, so a second run would follow the interrupted one.
    for name, start in (("early.csv", T0), ("late.csv", T0 + timedelta(days=365))):
        with (tmp_path / name).open("w") as handle:
            handle.write("timestamp,value\n")
            handle.writelines(f"{start + STEP * i:%Y-%m-%dT%H:%M:%SZ},{(i * 7) % 11 - 5}\n" for i in range(600))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    child = subprocess.Popen([sys.executable, "-m", "qraft_cli", "analyze", "early.csv", "late.csv", "--json"],
                             cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    said = []
    for line in child.stderr:  # interrupted as soon as the runs begin: the first one is in progress
        said.append(line)
        if line.startswith("3/3 materializing"):
            break
    assert "in 2 run(s)" in "".join(said), said
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130, err[-3000:]
    assert "interrupted: qraft analyze stopped; nothing was left running" in err
    assert "Traceback" not in err and "Aborted" not in err
    assert out == ""  # no findings printed
    assert processes_mentioning(str(tmp_path / "qraft_analyze")) == []


def test_analyze_data_dated_after_now(tmp_path: Path) -> None:
    # Dagster's time partitions end at the current time whatever their configured end: every run of
    # data dated after now failed ("No partitions in the PartitionsDefinition"), exit 0 and [] then.
    rng = np.random.default_rng(5)
    values = rng.normal(0.0, 1.0, 600)
    values[300:] += 8.0
    start = datetime(2034, 6, 1, tzinfo=UTC)
    (tmp_path / "planned.csv").write_text("timestamp,value\n" + "".join(
        f"{start + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ},{v:.4f}\n" for i, v in enumerate(values)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    done = subprocess.run([sys.executable, "-m", "qraft_cli", "analyze", "planned.csv", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    drifts = [f["timestamp"] for f in json.loads(done.stdout) if f["type"] == "concept_drift"]
    assert drifts == ["2034-06-01T05:00:00Z"], done.stderr[-3000:]  # the +8 at 05:00, dated at its change point
