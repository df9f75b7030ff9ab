"""`join`: features of another source's stream beside this source's bars (stream fusion)."""

from __future__ import annotations

from typing import ClassVar

import polars as pl
from pydantic import Field

from qraft_core.operators.base import (
    BaseOperator,
    OperatorContext,
    OperatorError,
    OperatorParams,
    register_operator,
)


class JoinParams(OperatorParams):
    # The other source; its pipeline runs first.
    source: str
    # Its stream to take (default: the stream named like the source).
    stream: str | None = None
    columns: list[str] = Field(min_length=1)
    # Prefix of the joined columns (default "<source>_").
    prefix: str | None = None
    # Value where the other stream has no bar.
    fill: float = 0.0


@register_operator
class Join(BaseOperator[JoinParams]):
    """Left-joins `columns` of the other stream's bar at the same `bar_time`.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 1, 5, tzinfo=UTC)
    >>> news = pl.DataFrame({"stream": ["news"], "bar_time": [t], "headline_count": [3.0]})
    >>> bars = pl.DataFrame({"stream": ["x:A", "x:B"], "bar_time": [t, t], "close": [1.0, 2.0]})
    >>> op = Join({"source": "news", "columns": ["headline_count"]})
    >>> op.apply(bars, OperatorContext("x", 10, bars={"news": news}))["news_headline_count"].to_list()
    [3.0, 3.0]
    """

    name: ClassVar[str] = "join"
    params_model: ClassVar[type[OperatorParams]] = JoinParams

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        options = self.options
        other = context.bars.get(options.source)
        if other is None:
            raise OperatorError(f"join: no bars of source {options.source!r} in this run")
        missing = [c for c in options.columns if c not in other.columns]
        if missing and other.height:
            raise OperatorError(f"join: source {options.source!r} has no column(s) {', '.join(missing)}")
        prefix = options.prefix if options.prefix is not None else f"{options.source}_"
        stream = options.stream or options.source
        renamed = {c: prefix + c for c in options.columns}
        if other.height:
            right = other.filter(pl.col("stream") == stream).select(
                "bar_time", *(pl.col(c).cast(pl.Float64).alias(renamed[c]) for c in options.columns)
            )
        else:
            right = pl.DataFrame(
                schema={"bar_time": frame.schema["bar_time"], **dict.fromkeys(renamed.values(), pl.Float64)}
            )
        joined = frame.join(right, on="bar_time", how="left", maintain_order="left")
        return joined.with_columns(pl.col(c).fill_null(options.fill) for c in renamed.values())
