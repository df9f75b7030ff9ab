"""Replay throughput: a day of demo-like data through every asset, with and without Dagster.

The demo generator's three hours are repeated across the day (eight shifts) for
two seeds, the second under other symbols, which gives four trade streams and
a news stream: about 1.7 million events over 1,440 one-minute windows, landed
straight into `raw_events` of an embedded ClickHouse in a temporary directory.

Measured in the same run over the same windows:
- baseline: the qraft_core functions the assets call (clean, features,
  detections, pattern events, cards), in chunks of `max_windows_per_run`;
- value: `qraft replay --in-process`'s path, ranged Dagster runs of the
  pipeline job on its ephemeral instance (whose event log writes a batch of
  events in one transaction, `qraft_dagster.event_log`).
The ratio is the orchestration overhead. QRAFT_BENCH_HOURS (default 24)
shortens the day for a quick look. Both paths run in this process, which
also counts the CPU seconds of each (`cpu_s`, `baseline_cpu_s`, chDB's
threads included): on a shared machine they vary less than wall time.
Prints JSON lines {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from core_path import close_store, core_calls

from qraft_core.runtime import Runtime

HOURS = int(os.environ.get("QRAFT_BENCH_HOURS", "24"))
START = datetime(2026, 1, 5, tzinfo=UTC)
SHIFT = timedelta(hours=3)
RENAMED = {"BTCUSDT": "SOLUSDT", "ETHUSDT": "BNBUSDT"}


def day_of_raw_events(work: Path) -> pl.DataFrame:
    from qraft_core.demo.generate import clean_events_frame, generate_demo

    copies = []
    for seed, rename in ((7, {}), (8, RENAMED)):
        base = clean_events_frame(generate_demo(work / f"seed{seed}", seed=seed))
        for symbol, other in rename.items():
            base = base.with_columns(
                pl.col("payload").str.replace(f'"s":"{symbol}"', f'"s":"{other}"', literal=True),
                pl.col("event_id").str.replace(symbol, other, literal=True),
            )
        for shift in range(-(-HOURS // 3)):
            offset = SHIFT * shift
            copies.append(base.with_columns(
                (pl.col("timestamp") + offset).alias("timestamp"),
                (pl.col("event_id") + f"#{seed}.{shift}").alias("event_id"),
            ))
    frame = pl.concat(copies).filter(pl.col("timestamp") < START + timedelta(hours=HOURS))
    return frame.select(
        "event_id", "source", "type", "timestamp",
        pl.col("timestamp").alias("ingest_time"),
        pl.col("timestamp").alias("landed_at"),
        "payload",
        pl.lit("bench/1").alias("parser_version"),
        pl.lit("").alias("raw_checksum"),
    )


def write_config(work: Path, name: str) -> Path:
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    config = work / f"config_{name}"
    shutil.copytree(repo / "config", config)
    qraft = yaml.safe_load((config / "qraft.yaml").read_text())
    qraft["data_dir"] = str(work / f"data_{name}")
    qraft["partitions"]["end"] = (START + timedelta(days=max(1, -(-HOURS // 24)))).isoformat()
    qraft.setdefault("mlflow", {})["enabled"] = False  # the same for both paths; MLflow cost is not replay cost
    (config / "qraft.yaml").write_text(yaml.safe_dump(qraft))
    return config


def uses(rt: Runtime) -> Runtime:
    """`rt`, with its configuration folder the one of the process: what qraft_core reads there by itself
    (cards' stream keys from preprocessing.yaml) then comes from the same files on both paths."""
    os.environ["QRAFT_CONFIG_DIR"] = str(rt.config_path)
    return rt


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        # Each path gets its own store holding the same raw events, so both write into empty tables.
        core_rt, dagster_rt = (Runtime.load(write_config(work, name)) for name in ("core", "dagster"))
        raw = day_of_raw_events(work)
        for rt in (core_rt, dagster_rt):
            rt.store.insert("raw_events", raw)
        start, end = START, START + timedelta(hours=HOURS)
        # Both paths run in this process: pay imports, the JVM start and Dagster's first run (its lazily
        # imported execution modules, the instance's storage schema) before either is timed.
        from qraft_core.detectors.capymoa_engine import capymoa_available
        from qraft_dagster.definitions import build_definitions
        from qraft_dagster.event_log import ephemeral_instance
        from qraft_dagster.replay import run_replay

        capymoa_available()
        warm = {name: Runtime.load(write_config(work, f"warm_{name}")) for name in ("core", "dagster")}
        for rt in warm.values():
            rt.store.insert("raw_events", raw.filter(pl.col("timestamp") < START + timedelta(minutes=2)))
        warm_end = start + 2 * core_rt.config.partitions.interval
        core_calls(uses(warm["core"]), start, warm_end)
        run_replay(build_definitions(str(warm["dagster"].config_path)), ephemeral_instance(), uses(warm["dagster"]),
                   start, warm_end)

        began, cpu = time.perf_counter(), time.process_time()
        core_calls(uses(core_rt), start, end)
        baseline_s, baseline_cpu_s = time.perf_counter() - began, time.process_time() - cpu
        findings = core_rt.store.count("pattern_events").get("", 0)

        defs = build_definitions(str(uses(dagster_rt).config_path))
        instance = ephemeral_instance()
        began, cpu = time.perf_counter(), time.process_time()
        outcome = run_replay(defs, instance, dagster_rt, start, end)
        dagster_s, dagster_cpu_s = time.perf_counter() - began, time.process_time() - cpu
        close_store()
        if outcome["failed_runs"]:
            print(f"replay runs failed: {outcome['failed_runs']}", file=sys.stderr)
            return 1
        same = dagster_rt.store.count("pattern_events").get("", 0) == findings
        events = raw.height
        for name, value, base, unit in (
            ("replay_events_per_s", events / dagster_s, events / baseline_s, "events/s"),
            ("replay_seconds", dagster_s, baseline_s, "s"),
        ):
            print(json.dumps({"bench": name, "value": round(value, 1), "unit": unit, "baseline": round(base, 1),
                              "ratio": round(value / base, 3), "cpu_s": round(dagster_cpu_s, 1),
                              "baseline_cpu_s": round(baseline_cpu_s, 1), "events": events, "hours": HOURS,
                              "runs": outcome["runs"], "pattern_events": findings, "same_findings": same}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
