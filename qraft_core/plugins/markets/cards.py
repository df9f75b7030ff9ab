"""What the markets plugin adds to pattern events and cards: the market metric set,
trade and headline context summaries, and the words for market fields."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from qraft_core.explain.context import ContextLine, register_context_summarizer, words_of
from qraft_core.explain.templates import register_phrase, register_vocabulary
from qraft_core.patterns.metrics import Metrics, register_metric_set
from qraft_core.payload import payload_field
from qraft_core.plugins.markets.rules import TRADE_TYPES

HEADLINE_TYPES = ("headline",)
MAX_TITLES = 3
# metric name -> (bar column, unit); see qraft_core.patterns.metrics for the units.
MARKET_METRICS: Metrics = {
    "volatility": ("realized_vol", "relative"),
    "volume": ("volume", "relative"),
    "trade_size": ("mean_size", "relative"),
    "buy_ratio": ("buy_ratio", "pp"),
    "price": ("close", "relative"),
    "headlines": ("headline_count", "relative"),
}


@register_metric_set("markets")
def market_metrics(columns: Sequence[str]) -> Metrics:
    return {name: spec for name, spec in MARKET_METRICS.items() if spec[0] in columns}


def _payload_field(*names: str) -> pl.Expr:
    return pl.coalesce([payload_field(name) for name in names])


@register_context_summarizer("trades", TRADE_TYPES)
def trade_summary(rows: pl.DataFrame, focus: Sequence[str] = ()) -> list[ContextLine]:
    """Trade count, price range, first and last price, volume."""
    trades = rows.select(
        _payload_field("p", "price").cast(pl.Float64, strict=False).alias("price"),
        _payload_field("q", "qty", "quantity").cast(pl.Float64, strict=False).alias("qty"),
    ).drop_nulls("price")
    if trades.height == 0:
        return []
    prices = trades["price"]
    return [ContextLine(phrase="context_trades", values={
        "count": trades.height,
        "price_min": float(prices.min()),  # type: ignore[arg-type]
        "price_max": float(prices.max()),  # type: ignore[arg-type]
        "price_first": float(prices[0]),
        "price_last": float(prices[-1]),
        # Rounded so float summation noise never shows up on a card.
        "volume": round(float(trades["qty"].fill_null(0.0).sum()), 8),
    })]


@register_context_summarizer("headlines", HEADLINE_TYPES)
def headline_summary(rows: pl.DataFrame, focus: Sequence[str] = ()) -> list[ContextLine]:
    """The number of headlines and the first few titles; with focus terms (a frequent
    itemset), how many titles contain them all and the first few of those."""
    titles = rows.select(_payload_field("headline", "title").alias("title")).drop_nulls("title")["title"]
    if titles.len() == 0:
        return []
    if not focus:
        return [ContextLine(phrase="context_headlines", values={"count": titles.len()},
                            examples=titles.head(MAX_TITLES).to_list())]
    terms = {term.lower() for term in focus}
    matching = [title for title in titles.to_list() if terms <= words_of(title)]
    return [ContextLine(phrase="context_headlines_with",
                        values={"count": titles.len(), "matching": len(matching), "terms": " & ".join(focus)},
                        examples=matching[:MAX_TITLES])]


register_phrase(
    "context_trades",
    frozenset({"count", "price_min", "price_max", "price_first", "price_last", "volume"}),
    {
        "en": "{count} trades, price {price_min} to {price_max} (first {price_first}, last {price_last}), volume {volume}",
        "zh": "{count} 笔成交，价格 {price_min} 至 {price_max}（首笔 {price_first}，末笔 {price_last}），成交量 {volume}",
    },
)
register_phrase("context_headlines", frozenset({"count"}), {"en": "{count} headlines", "zh": "{count} 条新闻标题"})
register_phrase(
    "context_headlines_with",
    frozenset({"count", "matching", "terms"}),
    {"en": "{count} headlines, {matching} of them containing {terms}",
     "zh": "{count} 条新闻标题，其中 {matching} 条包含 {terms}"},
)
# Metric names (MARKET_METRICS) and the bar features detectors read (ohlcv), in both languages.
register_vocabulary(
    {
        "en": {"volatility": "price volatility", "realized_vol": "realized volatility", "volume": "trade volume",
               "trade_count": "trade count", "price": "price", "close": "close price", "log_return": "log return",
               "spread": "spread", "headline_count": "headline count", "headlines": "headlines",
               "trade_size": "mean trade size", "mean_size": "mean trade size", "buy_ratio": "buyer share"},
        "zh": {"volatility": "价格波动率", "realized_vol": "已实现波动率", "volume": "成交量",
               "trade_count": "成交笔数", "price": "价格", "close": "收盘价", "log_return": "对数收益率",
               "spread": "价差", "headline_count": "新闻数量", "headlines": "新闻数量",
               "trade_size": "平均成交规模", "mean_size": "平均成交规模", "buy_ratio": "主动买入占比"},
    },
    units={"en": {"trades": "trades", "headlines": "headlines"}, "zh": {"trades": "笔", "headlines": "条"}},
)
