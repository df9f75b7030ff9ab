"""`normalize`: each field against the stream's trailing window of bars."""

from __future__ import annotations

from typing import ClassVar, Literal

import polars as pl
from pydantic import Field, model_validator

from qraft_core.operators.base import (
    OperatorContext,
    OperatorParams,
    TrailingOperator,
    register_operator,
)


class NormalizeParams(OperatorParams):
    fields: list[str] = Field(min_length=1)
    method: Literal["zscore", "minmax"] = "zscore"
    # Trailing window in bars; the current bar is not part of its own window.
    window: int = Field(default=60, ge=2)
    # Fewer earlier bars than this in the window gives 0.0.
    min_periods: int = Field(default=10, ge=2)
    # Appended to each field's name: `volume` → `volume_z`.
    suffix: str | None = None

    @model_validator(mode="after")
    def _periods_fit(self) -> NormalizeParams:
        if self.min_periods > self.window:
            raise ValueError(f"min_periods ({self.min_periods}) is larger than window ({self.window})")
        return self


@register_operator
class Normalize(TrailingOperator[NormalizeParams]):
    """`zscore`: (x - mean) / std (sample std) of the `window` bars before;
    `minmax`: (x - min) / (max - min) of those bars. Where the window holds fewer
    than `min_periods` bars or no spread, the value is 0.0. The window is time
    based (`window` × bar_seconds), so it reads the same bars however a range
    is cut into calls.

    >>> from datetime import datetime, timedelta, UTC
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> times = [t0 + timedelta(seconds=10 * i) for i in range(4)]
    >>> bars = pl.DataFrame({"stream": ["s"] * 4, "bar_time": times,
    ...     "volume": [1.0, 2.0, 3.0, 10.0]})
    >>> op = Normalize({"fields": ["volume"], "window": 3, "min_periods": 2})
    >>> op.apply(bars, OperatorContext("x", 10))["volume_z"].to_list()
    [0.0, 0.0, 2.1213203435596424, 8.0]
    """

    name: ClassVar[str] = "normalize"
    params_model: ClassVar[type[OperatorParams]] = NormalizeParams

    @property
    def lookback_bars(self) -> int:
        return self.options.window

    @property
    def suffix(self) -> str:
        if self.options.suffix is not None:
            return self.options.suffix
        return "_z" if self.options.method == "zscore" else "_mm"

    def required_columns(self) -> list[str]:
        return list(self.options.fields)

    def compute(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        options = self.options
        if frame.height == 0:
            return frame.with_columns(
                pl.lit(None, dtype=pl.Float64).alias(f + self.suffix) for f in options.fields
            )
        period = f"{options.window * context.bar_seconds}s"
        trailing = frame.rolling(
            index_column="bar_time", period=period, closed="left", group_by="stream"
        ).agg(pl.col(f).cast(pl.Float64).alias(f"_w_{f}") for f in options.fields)
        frame = frame.join(trailing, on=["stream", "bar_time"], how="left")
        scaled = []
        for f in options.fields:
            window, x = pl.col(f"_w_{f}"), pl.col(f).cast(pl.Float64)
            if options.method == "zscore":
                centre, spread = window.list.mean(), window.list.std(ddof=1)
            else:
                centre, spread = window.list.min(), window.list.max() - window.list.min()
            value = (x - centre) / spread
            enough = (window.list.len() >= options.min_periods) & (spread > 0) & value.is_finite()
            scaled.append(pl.when(enough).then(value).otherwise(0.0).alias(f + self.suffix))
        return frame.with_columns(scaled).drop(f"_w_{f}" for f in options.fields)
