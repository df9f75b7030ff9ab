"""Features throughput: clean events per second turned into feature rows.

Input: the first 100k clean events of the demo dataset (trades of two symbols
and headlines). Measured: the configured pipelines (payload decoding,
aggregate, derive, normalize, text, join, conversion to table rows), alone and
through `materialize_features` on embedded ClickHouse (read, compute, replace).
Baseline (same run): a bare polars group_by computing OHLCV + volume per
stream and bar from the same payload strings. The generic `stats` aggregate is
measured on 100k metric events (`{"value": ...}`, one a second, any sign)
against a bare group_by of mean/min/max/last/std of the same payloads, with
the fields listed and with the fields detected from the payloads.
Prints JSON lines {"bench","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl

from qraft_core.demo import generate_demo
from qraft_core.demo.generate import clean_events_frame
from qraft_core.features import compute_bars, feature_rows, materialize_features
from qraft_core.operators import load_preprocessing
from qraft_core.operators.pipeline import PreprocessingConfig
from qraft_core.store import open_store

EVENTS = 100_000
REPEATS = 3
REPO = Path(__file__).resolve().parents[1]


def best_seconds(run: Callable[[], object]) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def raw_group_by(events: pl.DataFrame) -> pl.DataFrame:
    price = pl.col("payload").str.json_path_match("$.p").cast(pl.Float64)
    qty = pl.col("payload").str.json_path_match("$.q").cast(pl.Float64)
    symbol = pl.col("payload").str.json_path_match("$.s")
    return (
        events.filter(pl.col("type") == "trade")
        .select(
            symbol.alias("stream"),
            pl.col("timestamp").dt.truncate("10s").alias("bar_time"),
            price.alias("p"),
            qty.alias("q"),
        )
        .group_by("stream", "bar_time")
        .agg(
            pl.col("p").first().alias("open"),
            pl.col("p").max().alias("high"),
            pl.col("p").min().alias("low"),
            pl.col("p").last().alias("close"),
            pl.col("q").sum().alias("volume"),
        )
    )


def metric_events(count: int) -> pl.DataFrame:
    """Seeded metric events of one source, one a second, values of any sign."""
    start = pl.datetime(2014, 3, 1, time_zone="UTC")
    frame = pl.DataFrame({"i": range(count)}).with_columns(
        pl.lit("cpu").alias("source"),
        pl.lit("record").alias("type"),
        (pl.col("i").cast(pl.Utf8) + "-e").alias("event_id"),
        (start + pl.duration(seconds=pl.col("i"))).dt.cast_time_unit("ms").alias("timestamp"),
    )
    values = ((pl.col("i") * 7919 % 1000) - 500) / 10
    return frame.with_columns(
        (pl.lit('{"value": ') + values.cast(pl.Utf8) + pl.lit("}")).alias("payload")
    ).drop("i")


def raw_stats(events: pl.DataFrame) -> pl.DataFrame:
    value = pl.col("payload").str.json_path_match("$.value").cast(pl.Float64)
    return (
        events.select(pl.col("timestamp").dt.truncate("10s").alias("bar_time"), value.alias("v"))
        .group_by("bar_time")
        .agg(pl.len(), *(getattr(pl.col("v"), stat)().alias(stat) for stat in ("mean", "min", "max", "last")),
             pl.col("v").std(ddof=0).alias("std"))
    )


def emit(name: str, events_per_s: float, baseline: float) -> None:
    print(
        json.dumps(
            {
                "bench": name,
                "value": round(events_per_s),
                "unit": "events/s",
                "baseline": round(baseline),
                "ratio": round(events_per_s / baseline, 4),
            }
        )
    )


def main() -> None:
    config = load_preprocessing(REPO / "config")
    interval = timedelta(minutes=1)
    with tempfile.TemporaryDirectory() as tmp:
        events = clean_events_frame(generate_demo(Path(tmp) / "demo")).head(EVENTS)
        start = events["timestamp"].min().replace(second=0, microsecond=0)  # type: ignore[union-attr]
        end = events["timestamp"].max() + interval  # type: ignore[operator]
        end = end.replace(second=0, microsecond=0)
        no_history = pl.DataFrame()

        baseline = events.height / best_seconds(lambda: raw_group_by(events))
        compute = events.height / best_seconds(
            lambda: feature_rows(compute_bars(config, events, no_history), start, interval)
        )
        emit("features_compute_events_per_s", compute, baseline)

        store = open_store(f"chdb://{Path(tmp) / 'clickhouse'}")
        store.insert("clean_events", events)
        materialized = events.height / best_seconds(
            lambda: materialize_features(store, config, start, end, interval)
        )
        emit("features_materialize_chdb_events_per_s", materialized, baseline)

        metrics = metric_events(EVENTS)
        stats_baseline = metrics.height / best_seconds(lambda: raw_stats(metrics))
        for name, params in (("listed", {"fields": ["value"]}), ("detected", {})):
            generic = PreprocessingConfig.model_validate(
                {"pipeline_by_source": [{"source": "cpu", "operators": [{"aggregate": params}]}]}
            )
            rate = metrics.height / best_seconds(lambda g=generic: compute_bars(g, metrics, no_history))
            emit(f"features_stats_{name}_fields_events_per_s", rate, stats_baseline)


if __name__ == "__main__":
    main()
