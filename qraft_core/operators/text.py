"""Text operators: `text_clean` (event level) and `keyword_extract` (events → bars)."""

from __future__ import annotations

from typing import ClassVar

import polars as pl
from pydantic import Field

from qraft_core.operators.base import (
    BaseOperator,
    OperatorContext,
    OperatorError,
    OperatorParams,
    bar_start,
    register_operator,
)
from qraft_core.payload import payload_field

# Common English function words; headlines carry their meaning in the rest.
_STOPWORD_TEXT = """a about above after again against all am an and any are as at be because been before
being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no nor not now
    of off on once only or other our ours out over own same she should so some such than that the their
    theirs them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours amid says said new after over near via
    vs"""
ENGLISH_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class TextCleanParams(OperatorParams):
    # Payload field holding the text.
    field: str = "headline"


@register_operator
class TextClean(BaseOperator[TextCleanParams]):
    """Adds `text`: the field lower-cased, without URLs, punctuation or repeated spaces.

    >>> events = pl.DataFrame({"payload": ['{"headline": "BTC ETF: Approval (at last!) https://x.io/a"}']})
    >>> TextClean().apply(events, OperatorContext("news", 10))["text"].to_list()
    ['btc etf approval at last']
    """

    name: ClassVar[str] = "text_clean"
    params_model: ClassVar[type[OperatorParams]] = TextCleanParams

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        if "payload" not in frame.columns:
            raise OperatorError("text_clean: the frame lacks column payload")
        text = (
            payload_field(self.options.field)
            .fill_null("")
            .str.to_lowercase()
            .str.replace_all(r"https?://\S+", " ")
            .str.replace_all(r"[^\p{L}\p{N}]+", " ")
            .str.strip_chars()
        )
        return frame.with_columns(text.alias("text"))


class KeywordExtractParams(OperatorParams):
    topk: int = Field(default=20, ge=1, le=1000)
    min_length: int = Field(default=3, ge=1)
    extra_stopwords: list[str] = Field(default_factory=list)
    # Name of the feature counting the bar's events (e.g. headlines).
    count_feature: str = Field(default="headline_count", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@register_operator
class KeywordExtract(BaseOperator[KeywordExtractParams]):
    """One bar per stream with events: `items`, the bar's `topk` most frequent tokens of
    `text` (stopwords, numbers and tokens shorter than `min_length` removed; ties broken
    alphabetically), and the event count as `count_feature`.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 1, 5, tzinfo=UTC)
    >>> events = pl.DataFrame({"stream": ["news"] * 2, "timestamp": [t, t], "event_id": ["1", "2"],
    ...     "text": ["etf approval is near", "the etf debate"]})
    >>> bars = KeywordExtract({"topk": 2}).apply(events, OperatorContext("news", 10))
    >>> bars.select("items", "headline_count").row(0)
    (['etf', 'approval'], 2.0)
    """

    name: ClassVar[str] = "keyword_extract"
    params_model: ClassVar[type[OperatorParams]] = KeywordExtractParams

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        missing = [c for c in ("stream", "timestamp", "text") if c not in frame.columns]
        if missing:
            raise OperatorError(
                f"keyword_extract: the frame lacks column(s) {', '.join(missing)} (put text_clean before it)"
            )
        options = self.options
        stopwords = sorted(ENGLISH_STOPWORDS | {w.lower() for w in options.extra_stopwords})
        events = frame.select("stream", "text", bar_start("timestamp", context.bar_seconds).alias("bar_time"))
        counts = events.group_by("stream", "bar_time").agg(
            pl.len().cast(pl.UInt32).alias("event_count"),
        )
        tokens = (
            events.select("stream", "bar_time", pl.col("text").str.split(" ").alias("token"))
            .explode("token")
            .filter(
                (pl.col("token").str.len_chars() >= options.min_length)
                & ~pl.col("token").is_in(stopwords)
                & ~pl.col("token").str.contains(r"^\p{N}+$")
            )
            .group_by("stream", "bar_time", "token")
            .len("n")
            .sort(["stream", "bar_time", "n", "token"], descending=[False, False, True, False])
            .group_by("stream", "bar_time", maintain_order=True)
            .agg(pl.col("token").head(options.topk).alias("items"))
        )
        return (
            counts.join(tokens, on=["stream", "bar_time"], how="left")
            .with_columns(
                pl.col("items").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
                pl.col("event_count").cast(pl.Float64).alias(options.count_feature),
            )
            .sort("stream", "bar_time")
        )
