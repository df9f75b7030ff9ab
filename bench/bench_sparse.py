"""Low-rate metric streams through the replay path, against a bare River loop over the same rows.

Twelve seeded `timestamp,value` files of 20,000 rows each, one row a second over
the same 5.6 hours (level shifts, spikes and dips at seeded places), are set up
as `qraft analyze` would: its inferred configuration (one stream per file, 1 s
bars, 1-minute windows, the default detector set), their rows parsed by the
generic file parser straight into `raw_events` of an embedded ClickHouse in a
temporary directory. Measured in the same run:

- value: the qraft_core calls the assets make (clean, features, detections,
  pattern events), in chunks of `max_windows_per_run`;
- baseline: a bare River loop over the same rows (HalfSpaceTrees scoring and
  learning the value, ADWIN on it), one pair of models per file;
- the detector state written per stream and window, on average, against one
  full snapshot per stream (what writing the state after every window costs);
- the same calls over windows after the data, which have no events: the cost
  of one more such window (runs of 240 windows minus runs of 24, per window),
  against the average window with data; `run_fixed_s` is what a run costs
  whatever its windows (sessions, queries).
QRAFT_BENCH_ROWS (default 20000) shortens the files for a quick look.

Prints JSON lines {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from core_path import close_store, core_calls

FILES = 12
ROWS = int(os.environ.get("QRAFT_BENCH_ROWS", "20000"))
START = datetime(2026, 3, 2, tzinfo=UTC)
EMPTY_WINDOWS = (24, 240)
REPO = Path(__file__).resolve().parents[1]


def write_files(folder: Path) -> list[Path]:
    """Seeded metric files of different scales and noise, each with a level shift, a spike and a dip."""
    paths = []
    for index in range(FILES):
        rng = np.random.default_rng(100 + index)
        level, noise = rng.uniform(-50, 500), rng.uniform(0.5, 20)
        values = level + np.cumsum(rng.normal(0, noise * 0.01, ROWS)) + rng.normal(0, noise, ROWS)
        shift, spike, dip = (int(rng.integers(ROWS // 10, ROWS - ROWS // 10)) for _ in range(3))
        values[shift:] += 6 * noise
        values[spike] += 15 * noise
        values[dip] -= 15 * noise
        times = [(START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(ROWS)]
        path = folder / f"metric_{index:02d}.csv"
        pl.DataFrame({"timestamp": times, "value": np.round(values, 4)}).write_csv(path)
        paths.append(path)
    return paths


def raw_events(paths: list[Path], sources: list[dict[str, Any]]) -> pl.DataFrame:
    """The `raw_events` rows the file sources and the lander would write (without the bus)."""
    from qraft_core.adapters.file import read_records
    from qraft_core.adapters.parsers import GenericOptions, build_parser
    from qraft_core.events import checksum

    rows: dict[str, list[Any]] = {k: [] for k in ("event_id", "source", "type", "timestamp", "payload")}
    for path, source in zip(paths, sources, strict=True):
        options = source["options"]
        parse = build_parser("generic", GenericOptions(time_field=options["time_field"],
                                                       time_unit=options["time_unit"],
                                                       event_type=options["event_type"]), source["name"])
        for record, raw, _ in read_records(path, options["format"], []):
            parsed = parse(record or {}, checksum(raw))
            payload = json.dumps(parsed.payload, separators=(",", ":"), sort_keys=True)
            for key, value in zip(rows, (parsed.event_id, source["name"], parsed.type, parsed.timestamp, payload),
                                  strict=True):
                rows[key].append(value)
    frame = pl.DataFrame(rows).with_columns(pl.col("timestamp").dt.cast_time_unit("ms"))
    return frame.with_columns(
        pl.col("timestamp").alias("ingest_time"), pl.col("timestamp").alias("landed_at"),
        pl.lit("bench/1").alias("parser_version"), pl.lit("").alias("raw_checksum"),
    )


def bare_river(paths: list[Path]) -> float:
    """Rows per second of HalfSpaceTrees + ADWIN fed every value of every file by hand."""
    from river import anomaly, drift

    columns = [pl.read_csv(path)["value"].to_list() for path in paths]
    began = time.perf_counter()
    for values in columns:
        low, high = min(values), max(values)
        hst, adwin = anomaly.HalfSpaceTrees(seed=42), drift.ADWIN()
        for value in values:
            point = {"value": (value - low) / (high - low)}
            hst.score_one(point)
            hst.learn_one(point)
            adwin.update(value)
    return sum(len(v) for v in columns) / (time.perf_counter() - began)


def main() -> None:
    import yaml

    from qraft_core.analyze import infer_config
    from qraft_core.runtime import Runtime

    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "files").mkdir()
        paths = write_files(work / "files")
        config = work / "config"
        plan = infer_config(paths, None, config, work / "data")
        shutil.copyfile(REPO / "config" / "cards.yaml", config / "cards.yaml")
        rt = Runtime.load(config)
        rt.store.migrate()
        raw = raw_events(paths, yaml.safe_load((config / "sources.yaml").read_text())["sources"])
        rt.store.insert("raw_events", raw)
        start, end = plan.start, plan.end

        began = time.perf_counter()
        core_calls(rt, start, end, cards=False)
        replay_s = time.perf_counter() - began
        bare = bare_river(paths)
        ours = raw.height / replay_s
        windows = round((end - start) / timedelta(minutes=plan.interval_minutes))
        with rt.store.session():
            states = rt.store.select("detector_state", columns=["window_start", "detector", "state"])
            findings = rt.store.count("pattern_events").get("", 0)
        states = states.with_columns(pl.col("state").str.len_bytes().alias("bytes"))
        state_bytes = states["bytes"].sum() / (FILES * windows)
        snapshots = states.filter(pl.col("detector") != "*")["window_start"].n_unique()
        snapshot_bytes = states.filter(pl.col("detector") != "*")["bytes"].sum() / (FILES * max(snapshots, 1))

        seconds = []
        cursor = end
        for count in EMPTY_WINDOWS:
            began = time.perf_counter()
            core_calls(rt, cursor, cursor + count * timedelta(minutes=plan.interval_minutes), cards=False)
            seconds.append(time.perf_counter() - began)
            cursor += count * timedelta(minutes=plan.interval_minutes)
        (few, many), (short_s, long_s) = EMPTY_WINDOWS, seconds
        empty_ms = max(long_s - short_s, 0.0) * 1000 / (many - few)
        run_fixed_s = short_s - few * empty_ms / 1000
        close_store()

    common = {"files": FILES, "rows": raw.height, "windows": windows, "pattern_events": findings}
    print(json.dumps({"bench": "replay_sparse_rows_per_s", "value": round(ours, 1), "unit": "rows/s",
                      "baseline": round(bare, 1), "ratio": round(ours / bare, 3), "replay_s": round(replay_s, 1),
                      **common}))
    print(json.dumps({"bench": "detector_state_bytes_per_stream_window", "value": round(state_bytes, 1),
                      "unit": "bytes", "baseline": round(snapshot_bytes, 1),
                      "ratio": round(state_bytes / snapshot_bytes, 3), "snapshots": snapshots, **common}))
    busy_ms = replay_s * 1000 / windows
    print(json.dumps({"bench": "replay_empty_window_ms", "value": round(empty_ms, 2), "unit": "ms",
                      "baseline": round(busy_ms, 2), "ratio": round(empty_ms / busy_ms, 3),
                      "windows": list(EMPTY_WINDOWS), "run_fixed_s": round(run_fixed_s, 2)}))


if __name__ == "__main__":
    main()
