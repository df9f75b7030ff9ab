"""The `ohlcv` aggregate method: trades → OHLCV bars with order-flow and volatility features."""

from __future__ import annotations

import polars as pl

from qraft_core.operators.aggregate import register_aggregate_method
from qraft_core.operators.base import OperatorContext, OperatorParams, bar_start
from qraft_core.payload import payload_field


class OhlcvParams(OperatorParams):
    # Payload fields holding price, quantity and Binance's buyer-is-maker flag
    # (true: the seller took liquidity, so the trade is a sell).
    price: str = "p"
    quantity: str = "q"
    buyer_is_maker: str | None = "m"


@register_aggregate_method("ohlcv", OhlcvParams)
def ohlcv(frame: pl.DataFrame, options: OhlcvParams, context: OperatorContext) -> pl.DataFrame:
    """One bar per stream and `bar_seconds`: open/high/low/close, `vwap`, `volume`,
    `quote_volume`, `trade_count`, `buy_volume`, `buy_ratio` (taker-buy share of
    volume), `imbalance` ((buy - sell) / volume), `mean_size` and `realized_vol`
    (square root of the summed squared log returns between the bar's trades).

    Events without a positive finite price and quantity are dropped and counted.

    >>> from datetime import datetime, UTC
    >>> from qraft_core.operators import build_operator
    >>> t1, t2 = datetime(2026, 1, 5, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 5, 0, 0, 2, tzinfo=UTC)
    >>> events = pl.DataFrame({
    ...     "stream": ["x:A", "x:A"], "event_id": ["1", "2"], "timestamp": [t1, t2],
    ...     "payload": ['{"p": 100, "q": 1, "m": false}', '{"p": 110, "q": 3, "m": true}']})
    >>> bars = build_operator("aggregate", {"method": "ohlcv"}).apply(events, OperatorContext("x", 10))
    >>> bars.select("open", "close", "vwap", "volume", "buy_ratio").row(0)
    (100.0, 110.0, 107.5, 4.0, 0.25)
    """
    is_sell = (
        payload_field(options.buyer_is_maker).str.to_lowercase().eq("true").fill_null(False)
        if options.buyer_is_maker
        else pl.lit(False)
    )
    trades = frame.select(
        "stream",
        "timestamp",
        "event_id",
        payload_field(options.price).cast(pl.Float64, strict=False).alias("price"),
        payload_field(options.quantity).cast(pl.Float64, strict=False).alias("qty"),
        is_sell.alias("is_sell"),
    )
    usable = (
        pl.col("price").is_finite() & (pl.col("price") > 0) & pl.col("qty").is_finite() & (pl.col("qty") > 0)
    ).fill_null(False)
    context.drop(
        "aggregate: no positive finite price and quantity", trades.height - trades.filter(usable).height
    )
    trades = (
        trades.filter(usable)
        .with_columns(bar_start("timestamp", context.bar_seconds).alias("bar_time"))
        .sort("stream", "timestamp", "event_id")
    )
    price, qty = pl.col("price"), pl.col("qty")
    buy_qty = pl.when(pl.col("is_sell")).then(0.0).otherwise(qty)
    bars = trades.group_by("stream", "bar_time", maintain_order=True).agg(
        pl.len().cast(pl.UInt32).alias("event_count"),
        price.first().alias("open"),
        price.max().alias("high"),
        price.min().alias("low"),
        price.last().alias("close"),
        qty.sum().alias("volume"),
        (price * qty).sum().alias("quote_volume"),
        buy_qty.sum().alias("buy_volume"),
        price.log().diff().pow(2).sum().sqrt().alias("realized_vol"),
    )
    return bars.with_columns(
        (pl.col("quote_volume") / pl.col("volume")).alias("vwap"),
        pl.col("event_count").cast(pl.Float64).alias("trade_count"),
        (pl.col("buy_volume") / pl.col("volume")).alias("buy_ratio"),
        ((2 * pl.col("buy_volume") - pl.col("volume")) / pl.col("volume")).alias("imbalance"),
        (pl.col("volume") / pl.col("event_count")).alias("mean_size"),
    ).sort("stream", "bar_time")
