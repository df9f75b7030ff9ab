"""Seeded synthetic feature bars with known changes, for tests, doctests and benchmarks.

The frame has the shape `qraft_core.features.load_features` returns: one row
per (bar_time, stream), 10-second bars, trade streams with price/volume
features and their rolling z-scores, and a news stream with keyword lists.

>>> bars = synthetic_features(n_bars=120, seed=1)
>>> bars.height, sorted(bars["stream"].unique().to_list())
(240, ['binance_spot:BTCUSDT', 'news'])
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

START = datetime(2026, 1, 5, tzinfo=UTC)
BAR = timedelta(seconds=10)
Z_BARS = 60
KEYWORDS = ["fed", "rates", "etf", "btc", "miners", "exchange", "hack", "regulation", "inflation", "jobs"]


def _rolling_z(values: pl.Expr) -> pl.Expr:
    # Against the previous Z_BARS bars only, so a bar never dilutes its own score.
    mean = values.shift(1).rolling_mean(Z_BARS, min_samples=10)
    std = values.shift(1).rolling_std(Z_BARS, min_samples=10)
    return ((values - mean) / std).fill_nan(0.0).fill_null(0.0)


def trade_bars(
    stream: str,
    n_bars: int,
    rng: np.random.Generator,
    start: datetime = START,
    vol_shift_at: int | None = None,
    spikes_at: Sequence[int] = (),
    regime_at: int | None = None,
) -> pl.DataFrame:
    """Bars of one trade stream; volatility triples at `vol_shift_at`, prices and volume
    jump at each of `spikes_at`, and volume, trade size and buy ratio jump together at `regime_at`."""
    index = np.arange(n_bars)
    vol = np.where(vol_shift_at is not None and index >= (vol_shift_at or 0), 0.003, 0.001)
    vol = vol * np.exp(rng.normal(0, 0.15, n_bars))
    log_return = rng.normal(0, 1, n_bars) * vol
    trade_count = rng.poisson(40, n_bars).astype(float) + 1
    mean_size = np.exp(rng.normal(-3.0, 0.2, n_bars))
    buy_ratio = np.clip(rng.normal(0.5, 0.04, n_bars), 0, 1)
    if regime_at is not None:
        after = index >= regime_at
        trade_count[after] *= 2.5
        mean_size[after] *= 2.0
        buy_ratio[after] = np.clip(buy_ratio[after] + 0.2, 0, 1)
    for bar in spikes_at:
        log_return[bar] += 0.02
        trade_count[bar] *= 8
    volume = trade_count * mean_size
    close = 42_000 * np.exp(np.cumsum(log_return))
    frame = pl.DataFrame(
        {
            "bar_time": [start + BAR * int(i) for i in index],
            "stream": stream,
            "event_count": trade_count.astype(np.int64),
            "close": close,
            "vwap": close * (1 + rng.normal(0, 1e-5, n_bars)),
            "volume": volume,
            "trade_count": trade_count,
            "buy_ratio": buy_ratio,
            "mean_size": mean_size,
            "realized_vol": vol,
            "log_return": log_return,
        }
    )
    return frame.with_columns(
        _rolling_z(pl.col(name)).alias(f"{name}_z") for name in ("realized_vol", "volume", "log_return", "mean_size")
    )


def news_bars(
    n_bars: int, rng: np.random.Generator, start: datetime = START, burst_at: int | None = None,
    burst: Sequence[str] = ("etf", "approval", "sec"),
) -> pl.DataFrame:
    """News keyword bars: sparse random keywords, plus `burst` together every third bar from `burst_at`."""
    items: list[list[str]] = []
    for i in range(n_bars):
        drawn = sorted({KEYWORDS[k] for k in rng.integers(0, len(KEYWORDS), rng.poisson(0.4))})
        if burst_at is not None and burst_at <= i < burst_at + 60 and (i - burst_at) % 3 == 0:
            drawn = sorted({*drawn, *burst})
        items.append(drawn)
    counts = [float(len(x)) for x in items]
    return pl.DataFrame(
        {"bar_time": [start + BAR * i for i in range(n_bars)], "stream": "news",
         "event_count": [int(c) for c in counts], "headline_count": counts, "items": items},
        schema_overrides={"items": pl.List(pl.Utf8)},
    )


def synthetic_features(
    n_bars: int = 600,
    seed: int = 7,
    streams: Sequence[str] = ("binance_spot:BTCUSDT",),
    vol_shift_at: int | None = None,
    spikes_at: Sequence[int] = (),
    regime_at: int | None = None,
    news_burst_at: int | None = None,
    start: datetime = START,
) -> pl.DataFrame:
    """All streams' bars sorted by (bar_time, stream), every stream with the same changes."""
    rng = np.random.default_rng(seed)
    frames = [trade_bars(s, n_bars, rng, start, vol_shift_at, spikes_at, regime_at) for s in streams]
    frames.append(news_bars(n_bars, rng, start, news_burst_at))
    combined = pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.col("bar_time").cast(pl.Datetime("ms", "UTC")),
        pl.col("bar_time").dt.truncate("1m").cast(pl.Datetime("ms", "UTC")).alias("window_start"),
    )
    return combined.sort("bar_time", "stream")
