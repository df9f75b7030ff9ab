"""Cleaning rule of the markets plugin: a trade needs a positive finite price and quantity."""

from __future__ import annotations

import polars as pl

from qraft_core.clean import Rule, register_clean_rule
from qraft_core.config import CleanConfig
from qraft_core.payload import payload_field

TRADE_TYPES = ("trade", "aggTrade")
# Binance's trade payload keys: price and quantity (sent as numeric strings).
PRICE_FIELD, QUANTITY_FIELD = "p", "q"


@register_clean_rule("positive_price_and_quantity")
def positive_price_and_quantity(config: CleanConfig) -> list[Rule]:
    rules = []
    for name in (PRICE_FIELD, QUANTITY_FIELD):
        text = payload_field(name)
        number = text.cast(pl.Float64, strict=False)
        bad = pl.col("type").is_in(TRADE_TYPES) & (number.is_null() | ~number.is_finite() | (number <= 0))
        rules.append((bad, pl.lit(f"payload.{name}: expected a positive number, got ") + text.fill_null("nothing")))
    return rules
