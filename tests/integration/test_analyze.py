"""`qraft analyze` on a metric CSV from 2014 with negative values and zeros, with no configuration:
the real pipeline (embedded NATS, lander, chDB, Dagster runs, cards) in a child process."""

from __future__ import annotations

import csv
import json
import os
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


def test_analyze_a_2014_metric_with_negatives_and_zeros(tmp_path: Path) -> None:
    data = tmp_path / "cpu_2014.csv"
    write_metric(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    done = subprocess.run(
        [sys.executable, "-m", "qraft_cli", "analyze", str(data), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    findings = json.loads(done.stdout)
    assert findings, done.stderr[-3000:]
    for finding in findings:
        assert {"pattern_id", "type", "timestamp", "source_streams", "confidence"} <= set(finding)
        assert finding["source_streams"] == ["cpu_2014"]
        assert finding["timestamp"].startswith("2014-03")
    shift = T0 + STEP * SHIFT_AT
    drifts = [f for f in findings if f["type"] == "concept_drift"]
    assert any(abs(datetime.fromisoformat(f["timestamp"]) - shift) <= 40 * STEP for f in drifts), findings
    assert "windows of 60 min" in done.stderr and "bars of 5min" in done.stderr
    # The configuration was written next to the data, and nothing the command started is left running.
    output = tmp_path / "qraft_analyze"
    assert sorted(p.name for p in (output / "config").iterdir()) == [
        "cards.yaml", "detectors.yaml", "preprocessing.yaml", "qraft.yaml", "sources.yaml"]
    assert processes_mentioning(str(output)) == []
    store = open_store(f"chdb://{output / 'data' / 'clickhouse'}", lock_timeout_s=60)
    with store.session():
        # Zeros and negative values are data, not dead letters.
        assert store.count("clean_events")[""] == ROWS
        assert store.count("dead_letters").get("", 0) == 0
        cards = store.select("pattern_cards", where=[Filter("lang", "=", "en")], columns=["markdown"])
    assert cards.height == len(findings)
    for markdown in cards["markdown"]:
        text = markdown.lower()
        assert "value" in text
        assert not [w for w in ("trade", "price", "volume", "buy_ratio", "volatility") if w in text], markdown
