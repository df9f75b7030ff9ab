"""Labelled operations scenarios: series as operators meet them, written apart from the corpus.

`qraft_core.demo.corpus` draws its streams from one recipe (background, profile,
planted changes); the defaults were tuned on it. These scenarios are written
one by one, each a situation of its own, so that a rule that only fits the
recipe shows here:

- nothing planted: CPU % every 5 minutes with a weekday peak and a lower
  weekend one; requests a minute with a daily cycle and bursty (gamma-mixed
  Poisson) counts; a random walk; exact zeros but for a nightly batch; queue
  depths of 0 to 3; irregular sampling with gaps of hours; Student t noise
  with 2 degrees of freedom; Gaussian noise;
- drifts: a memory leak (a ramp) and the restart that ends it; a temperature
  sensor stuck on one reading, then recovering; queue depths whose rate rises;
  a 4-spread step with irregular sampling; a 3-spread step of 1-second
  readings; a 3-spread step of daily readings over three years with weekly and
  yearly cycles; the spread doubled, or tripled; a 2-spread step;
- an anomaly: requests down to zero for half an hour.

Bars are one per sample at the bar size `qraft analyze` infers (the smallest of
its sizes at least the median sampling interval); labels are windows as in the
corpus: drifts `[t - 2 bars, t + 200 bars]`, anomalies `[t - 2 bars, t + 20 bars]`.

>>> streams = generate_scenarios(seeds=[1])
>>> len(streams), sorted({s.family for s in streams})
(18, ['anomaly', 'drift', 'nothing'])
>>> [(s.name, s.bar_s, len(s.truth)) for s in streams if s.name.startswith("memory")]
[('memory-leak-1m-s1', 60, 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from qraft_core.analyze import BAR_SIZES
from qraft_core.demo.corpus import ANOMALY_WINDOW_BARS, DRIFT_WINDOW_BARS, Stream
from qraft_core.evaluate import Item

START_S = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
DAY_S = 86_400
MINUTE_S = 60

# A scenario: (seed's generator) -> (sample times in epoch seconds, values, [(truth type, index of the sample)]).
Series = tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]


def _minutes(n: int) -> np.ndarray:
    return START_S + np.arange(n) * MINUTE_S


def cpu_weekly(rng: np.random.Generator) -> Series:
    times = START_S + np.arange(21 * 288) * 300
    hours, weekday = (times % DAY_S) / 3600, ((times - START_S) // DAY_S) % 7
    peak = 25 * np.exp(-(((hours - 14) / 4) ** 2)) * np.where(weekday >= 5, 0.3, 1.0)
    return times, np.round(np.clip(20 + peak + rng.normal(0, 3, times.size), 0, 100), 1), []


def memory_leak(rng: np.random.Generator) -> Series:
    times = _minutes(6000)
    leak = np.zeros(times.size)
    leak[2000:4000] = np.arange(2000) * 0.5  # +1,000 MB over 2,000 minutes, then the restart
    return times, np.round(2000 + leak + rng.normal(0, 5, times.size), 1), [("concept_drift", 2000),
                                                                           ("concept_drift", 4000)]


def requests(rng: np.random.Generator, outage: bool = False) -> Series:
    times = _minutes(7 * 1440)
    rate = (50 + 40 * np.sin(2 * np.pi * ((times % DAY_S) / 3600 - 8) / 24)) * rng.gamma(20, 1 / 20, times.size)
    counts = rng.poisson(rate).astype(float)
    if outage:
        counts[6000:6030] = 0.0
    return times, counts, [("anomaly", 6000)] if outage else []


def stuck_sensor(rng: np.random.Generator) -> Series:
    times = _minutes(6000)
    readings = np.round(21 + 2 * np.sin(2 * np.pi * ((times % DAY_S) / 3600 - 9) / 24)
                        + rng.normal(0, 0.15, times.size), 2)
    readings[4000:4400] = readings[4000]
    return times, readings, [("concept_drift", 4000), ("concept_drift", 4400)]


def random_walk(rng: np.random.Generator) -> Series:
    times = _minutes(10_000)
    return times, np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.0008, times.size))), 2), []


def nightly_batch(rng: np.random.Generator) -> Series:
    times = _minutes(7 * 1440)
    hours = (times % DAY_S) / 3600
    return times, np.round(np.where((hours >= 2) & (hours < 3), rng.gamma(4, 10, times.size), 0.0), 2), []


def queue_depth(rng: np.random.Generator, rises: bool = False) -> Series:
    times = _minutes(8000)
    rate = np.full(times.size, 0.6)
    if rises:
        rate[5000:] = 1.6
    return times, np.minimum(rng.poisson(rate), 3).astype(float), [("concept_drift", 5000)] if rises else []


def irregular(rng: np.random.Generator, step: bool = False) -> Series:
    gaps = rng.exponential(60, 8000)
    for at in rng.choice(np.arange(500, 7500), 4, replace=False):
        gaps[at] += rng.uniform(3, 6) * 3600
    readings = 50 + rng.normal(0, 2, gaps.size)
    if step:
        readings[5000:] += 8
    return START_S + np.cumsum(gaps).astype(int), np.round(readings, 3), [("concept_drift", 5000)] if step else []


def one_second(rng: np.random.Generator) -> Series:
    times = START_S + np.arange(20_000)
    readings = 10 + rng.normal(0, 1, times.size)
    readings[12_000:] += 3
    return times, np.round(readings, 3), [("concept_drift", 12_000)]


def daily_three_years(rng: np.random.Generator) -> Series:
    days = np.arange(1095)
    readings = (100 + 10 * np.sin(2 * np.pi * days / 365.25) + np.where(days % 7 >= 5, -5, 0)
                + rng.normal(0, 2, days.size))
    readings[800:] += 6
    return START_S + days * DAY_S, np.round(readings, 2), [("concept_drift", 800)]


def spread_change(rng: np.random.Generator, factor: float) -> Series:
    times = _minutes(6000)
    spread = np.where(np.arange(times.size) >= 3000, factor, 1.0)
    return times, np.round(50 + rng.normal(0, 1, times.size) * spread, 3), [("concept_drift", 3000)]


def step(rng: np.random.Generator) -> Series:
    times = _minutes(6000)
    readings = 50 + rng.normal(0, 1, times.size)
    readings[3000:] += 2
    return times, np.round(readings, 3), [("concept_drift", 3000)]


def student_t(rng: np.random.Generator) -> Series:
    times = _minutes(10_000)
    return times, np.round(50 + rng.standard_t(2, times.size), 3), []


def gaussian(rng: np.random.Generator) -> Series:
    times = _minutes(10_000)
    return times, np.round(50 + rng.normal(0, 1, times.size), 3), []


SCENARIOS: dict[str, Callable[[np.random.Generator], Series]] = {
    "cpu-weekly-5m": cpu_weekly,
    "memory-leak-1m": memory_leak,
    "requests-1m": requests,
    "requests-outage-1m": lambda rng: requests(rng, outage=True),
    "stuck-sensor-1m": stuck_sensor,
    "random-walk-1m": random_walk,
    "nightly-batch-1m": nightly_batch,
    "queue-depth-1m": queue_depth,
    "queue-depth-rises-1m": lambda rng: queue_depth(rng, rises=True),
    "irregular-gaps": irregular,
    "irregular-step": lambda rng: irregular(rng, step=True),
    "step-1s": one_second,
    "daily-3y": daily_three_years,
    "spread-x2-1m": lambda rng: spread_change(rng, 2.0),
    "spread-x3-1m": lambda rng: spread_change(rng, 3.0),
    "step-2-spreads-1m": step,
    "student-t2-1m": student_t,
    "gaussian-1m": gaussian,
}


def bar_size(times: np.ndarray) -> int:
    """The bar size `qraft analyze` would take: the smallest of its sizes at least the median interval."""
    median = float(np.median(np.diff(np.unique(times))))
    return next((size for size in BAR_SIZES if size >= median), BAR_SIZES[-1])


def scenario(name: str, seed: int) -> Stream:
    """One scenario's stream, drawn from (its position in `SCENARIOS`, seed)."""
    rng = np.random.default_rng([list(SCENARIOS).index(name), seed])
    times, values, planted = SCENARIOS[name](rng)
    return labelled_stream(f"{name}-s{seed}", name, times, values, planted)


def labelled_stream(stream: str, name: str, times: np.ndarray, values: np.ndarray,
                    planted: list[tuple[str, int]]) -> Stream:
    """Readings at `times` (epoch seconds) as the bars `qraft analyze` would make of them, with a truth
    item per (type, reading index) planted."""
    bar_s = bar_size(times)
    bars = (
        pl.DataFrame({"t": times, "v": values})
        .with_columns((pl.col("t") // bar_s * bar_s).alias("bar_s"))
        .group_by("bar_s", maintain_order=True)
        .agg(pl.len().alias("event_count"), pl.col("v").mean().alias("value_mean"),
             pl.col("v").min().alias("value_min"), pl.col("v").max().alias("value_max"),
             pl.col("v").last().alias("value_last"), pl.col("v").std().alias("value_std"))
        .sort("bar_s")
        .select(pl.from_epoch("bar_s", time_unit="s").dt.cast_time_unit("ms").dt.replace_time_zone("UTC")
                .alias("bar_time"), pl.lit(stream).alias("stream"), pl.col("event_count").cast(pl.Int64),
                "value_mean", "value_min", "value_max", "value_last", "value_std")
    )
    truth = []
    for i, (kind, index) in enumerate(planted):
        at = datetime.fromtimestamp(int(times[index]) // bar_s * bar_s, UTC)
        early, late = ANOMALY_WINDOW_BARS if kind == "anomaly" else DRIFT_WINDOW_BARS
        truth.append(Item(kind, stream, at, f"{stream}#{i}", at - timedelta(seconds=early * bar_s),
                          at + timedelta(seconds=late * bar_s)))
    kinds = {kind for kind, _ in planted}
    family = "nothing" if not kinds else "anomaly" if kinds == {"anomaly"} else "drift"
    return Stream(stream, family, name, bar_s, bars, truth)


def generate_scenarios(seeds: Iterable[int] = range(1, 6)) -> list[Stream]:
    """Every scenario for every seed."""
    return [scenario(name, seed) for seed in seeds for name in SCENARIOS]
