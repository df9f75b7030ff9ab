"""A seeded, labelled corpus of generic metric streams, for scoring detectors.

Each stream is one numeric field sampled every 1 s to 1 h, turned into generic
bars (`<field>_mean/min/max/last/std` and `event_count`, one bar per sample,
or per 10 samples for 1-second series), with planted changes and their labels:

- families: `nothing` (nothing planted), `drift` (level shifts and spread
  changes only), `anomaly` (spikes and dips only) and `mixed` (all of these,
  plus the start of a trend);
- backgrounds, drawn per stream: Gaussian, heavy-tailed (Student t, 4 degrees),
  autocorrelated (AR(1)), Poisson counts and quantized readings, at levels of
  either sign; daily and weekly profiles (and a daily spike at a fixed hour,
  not labelled: a seasonal event is no anomaly) where a day fits in the
  stream; a mild steady trend; gaps without bars and bars without a value.

Planted sizes are in units of the spread in force at that time (after a
widening, a shift of 3 is 3 of the new spreads): spikes and dips 7 to 12,
level shifts 3 to 5, spread changes x3 or /3 (for counts: deviations from the
rate scaled, i.e. over- or under-dispersion; a drift that cannot show in counts
whose expected value is below one is not labelled). A label is a window:
anomalies `[t - 2 bars, t + 20 bars]`, drifts `[t - 2 bars, t + 200 bars]`.

>>> corpus = generate_corpus(n_streams=8, n_bars=1500, seed=3)
>>> [s.family for s in corpus][:4], corpus[0].bars.columns[:4]
(['nothing', 'drift', 'anomaly', 'mixed'], ['bar_time', 'stream', 'event_count', 'requests_mean'])
>>> sum(len(s.truth) for s in corpus if s.family == "nothing")
0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qraft_core.evaluate import Item
from qraft_core.events import iso

FAMILIES = ("nothing", "drift", "anomaly", "mixed")
STEPS_S = (1, 10, 60, 300, 900, 3600)
BACKGROUNDS = ("gauss", "heavy", "ar1", "counts", "quantized")
START = datetime(2024, 3, 4, tzinfo=UTC)
ANOMALY_WINDOW_BARS = (2, 20)
DRIFT_WINDOW_BARS = (2, 200)
# No change is planted in a stream's first bars: every detector needs some history.
QUIET_BARS = 400
SPACING_BARS = 300


@dataclass(frozen=True)
class Stream:
    """One labelled stream: its generic bars and what was planted in it."""

    name: str
    family: str
    background: str
    bar_s: int
    bars: pl.DataFrame
    truth: list[Item]


def _background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise of unit spread (counts and quantized readings are shaped later)."""
    if kind == "heavy":
        return rng.standard_t(4, n) / np.sqrt(2.0)
    if kind == "ar1":
        shocks = rng.normal(0.0, np.sqrt(1 - 0.8**2), n)
        out = np.empty(n)
        out[0] = shocks[0]
        for i in range(1, n):
            out[i] = 0.8 * out[i - 1] + shocks[i]
        return out
    return rng.normal(0.0, 1.0, n)


def _seasonal(times_s: np.ndarray, rng: np.random.Generator, sample_s: int) -> np.ndarray:
    """Daily cycle, weekend dip and (sometimes) a daily spike at a fixed hour, in spreads."""
    day = (times_s % 86_400) / 86_400
    profile = rng.uniform(1.0, 4.0) * np.sin(2 * np.pi * (day - rng.uniform(0, 1)))
    weekday = (times_s // 86_400 + 3) % 7  # 1970-01-01 was a Thursday
    profile -= np.where(weekday >= 5, rng.uniform(0.5, 2.0), 0.0)
    if rng.random() < 0.5:
        at = rng.integers(0, 86_400 // sample_s) * sample_s
        profile += np.where(np.abs((times_s % 86_400) - at) < sample_s / 2, rng.uniform(8, 12), 0.0)
    return profile


def _plant(family: str, n_bars: int, rng: np.random.Generator) -> list[tuple[int, str, str, float]]:
    """(bar, truth type, kind, size) of the changes to plant, spaced apart after the quiet start."""
    if family == "nothing":
        return []
    slots = list(range(QUIET_BARS, n_bars - 250, SPACING_BARS))
    chosen = sorted(rng.choice(slots, size=min(len(slots), int(rng.integers(2, 6))), replace=False))
    kinds = {"drift": ("shift", "spread"), "anomaly": ("spike",), "mixed": ("shift", "spread", "spike", "trend")}
    planted = []
    for bar in chosen:
        kind = str(rng.choice(kinds[family]))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            planted.append((int(bar), "anomaly", kind, sign * rng.uniform(7, 12)))
        elif kind == "shift":
            planted.append((int(bar), "concept_drift", kind, sign * rng.uniform(3, 5)))
        elif kind == "spread":
            planted.append((int(bar), "concept_drift", kind, 3.0 if sign > 0 else 1 / 3))
        else:
            planted.append((int(bar), "concept_drift", kind, sign * rng.uniform(0.02, 0.05)))
    return planted


def make_stream(index: int, family: str, n_bars: int, seed: int) -> Stream:
    """One stream of the corpus; everything drawn from (seed, index)."""
    rng = np.random.default_rng([seed, index])
    background = str(rng.choice(BACKGROUNDS))
    sample_s = int(rng.choice(STEPS_S))
    per_bar = 10 if sample_s == 1 else 1
    bar_s = sample_s * per_bar
    n = n_bars * per_bar
    times_s = START.timestamp() + np.arange(n) * sample_s
    noise = _background(background, n, rng)
    signal = np.zeros(n)
    if bar_s >= 60 and rng.random() < 0.6:
        signal += _seasonal(times_s, rng, bar_s)
    if rng.random() < 0.3:
        signal += np.linspace(0, rng.uniform(-2, 2), n)  # a mild steady trend over the whole stream
    spread = np.ones(n)
    planted = _plant(family, n_bars, rng)
    for bar, _, kind, size in planted:
        at = bar * per_bar
        # Sizes are in units of the spread in force: after a widening, a shift of 3 is 3 new spreads.
        if kind == "spike":
            signal[at] += size * spread[at]
        elif kind == "shift":
            signal[at:] += size * spread[at]
        elif kind == "spread":
            spread[at:] *= size
        else:
            signal[at:] += size * spread[at] * np.arange(n - at) / per_bar
    scaled = signal + noise * spread
    level, unit = float(rng.uniform(-100, 300)), float(rng.uniform(0.2, 20))
    if background == "counts":
        rate = float(rng.uniform(2, 30))
        expected = np.clip(rate + np.sqrt(rate) * signal, 0, None)
        # A spread change of counts is over- or under-dispersion: deviations from the rate scaled.
        counts = rng.poisson(expected)
        values = np.clip(np.round(expected + (counts - expected) * spread), 0, None)
        planted = [p for p in planted if _countable(p, expected, per_bar)]
    elif background == "quantized":
        values = np.round(level + unit * scaled, 0 if unit > 2 else 1)
    else:
        values = level + unit * scaled
    name = f"{family}-{index:03d}-{background}-{sample_s}s"
    field = str(rng.choice(["value", "cpu_load", "requests", "temperature"]))
    bars = _bars(name, field, times_s, values, per_bar, bar_s, rng)
    truth = [
        Item(kind, name, datetime.fromtimestamp(START.timestamp() + bar * bar_s, UTC), f"{name}#{i}",
             *_window(bar, bar_s, kind))
        for i, (bar, kind, _, _) in enumerate(planted)
    ]
    return Stream(name, family, background, bar_s, bars, truth)


def _countable(change: tuple[int, str, str, float], expected: np.ndarray, per_bar: int) -> bool:
    """Whether a drift planted in counts shows in them. Where the expected count is below one, the
    counts are almost all zero: a spread change or a trend there changes nothing a detector (or a
    person) could see, and a level shift shows only if the counts are not zero on both sides."""
    bar, truth_type, kind, _ = change
    if truth_type != "concept_drift":
        return True
    at, span = bar * per_bar, DRIFT_WINDOW_BARS[1] * per_bar
    after = float(np.mean(expected[at:at + span] >= 1.0))
    if kind == "shift":
        return max(after, float(np.mean(expected[max(0, at - span):at] >= 1.0))) >= 0.5
    return after >= 0.5


def _window(bar: int, bar_s: int, kind: str) -> tuple[datetime, datetime]:
    early, late = ANOMALY_WINDOW_BARS if kind == "anomaly" else DRIFT_WINDOW_BARS
    return (datetime.fromtimestamp(START.timestamp() + (bar - early) * bar_s, UTC),
            datetime.fromtimestamp(START.timestamp() + (bar + late) * bar_s, UTC))


def _bars(name: str, field: str, times_s: np.ndarray, values: np.ndarray, per_bar: int, bar_s: int,
          rng: np.random.Generator) -> pl.DataFrame:
    """Generic bars, with gaps (bars missing) and bars whose value is missing."""
    frame = pl.DataFrame({"time_s": times_s, "v": values}).with_columns(
        (pl.col("time_s") // bar_s * bar_s).alias("bar_s"))
    bars = frame.group_by("bar_s", maintain_order=True).agg(
        pl.len().alias("event_count"),
        pl.col("v").mean().alias(f"{field}_mean"), pl.col("v").min().alias(f"{field}_min"),
        pl.col("v").max().alias(f"{field}_max"), pl.col("v").last().alias(f"{field}_last"),
        pl.col("v").std().alias(f"{field}_std"),
    )
    keep = np.ones(bars.height, dtype=bool)
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 4))):
            start = int(rng.integers(QUIET_BARS, max(QUIET_BARS + 1, bars.height - 100)))
            keep[start:start + int(rng.integers(10, 60))] = False
    missing = rng.random(bars.height) < 0.01
    value_columns = [c for c in bars.columns if c.startswith(field)]
    bars = bars.with_columns(
        [pl.when(pl.Series(missing)).then(None).otherwise(pl.col(c)).alias(c) for c in value_columns]
    ).filter(pl.Series(keep))
    return bars.select(
        pl.from_epoch(pl.col("bar_s"), time_unit="s").dt.cast_time_unit("ms").dt.replace_time_zone("UTC")
        .alias("bar_time"),
        pl.lit(name).alias("stream"),
        pl.col("event_count").cast(pl.Int64),
        *value_columns,
    )


def generate_corpus(n_streams: int = 48, n_bars: int = 4000, seed: int = 11) -> list[Stream]:
    """`n_streams` streams cycling through the families, `n_bars` bars each (before gaps)."""
    return [make_stream(i, FAMILIES[i % len(FAMILIES)], n_bars, seed) for i in range(n_streams)]


def truth_json(corpus: list[Stream], tolerance_s: float = 0.0) -> dict[str, Any]:
    """The corpus labels in `qraft evaluate`'s truth format (labelled windows)."""
    patterns = [
        {"id": t.id, "type": t.type, "stream": t.stream, "time": iso(t.time),
         "window": {"start": iso(t.start), "end": iso(t.end)}}
        for stream in corpus for t in stream.truth if t.start and t.end
    ]
    times: list[datetime] = [t for s in corpus for t in s.bars["bar_time"].to_list()]
    window = {"start": iso(min(times)), "end": iso(max(times) + timedelta(hours=1))} if times else {}
    return {"version": 1, "window": window, "tolerance_s": tolerance_s, "patterns": patterns}


def write_corpus(corpus: list[Stream], directory: Path) -> None:
    """One CSV of bars per stream and `ground_truth.json`, for inspection or other tools."""
    directory.mkdir(parents=True, exist_ok=True)
    for stream in corpus:
        stream.bars.write_csv(directory / f"{stream.name}.csv")
    (directory / "ground_truth.json").write_text(json.dumps(truth_json(corpus), indent=1) + "\n")
