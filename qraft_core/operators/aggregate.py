"""`aggregate`: clean events → one bar per stream and bar, by a named method.

The built-in method `stats` (the default) summarises any stream: per bar the
event count and, for every numeric payload field F, columns `F_<stat>`; each
categorical field gives one count column per value. Domain plugins register
further methods (the markets plugin registers `ohlcv`) with
`register_aggregate_method`, the same way a user's own plugin would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field, ValidationError, field_validator

from qraft_core.operators.base import (
    BaseOperator,
    OperatorContext,
    OperatorError,
    OperatorParams,
    bar_start,
    describe_params_error,
    register_operator,
)
from qraft_core.payload import payload_field, payload_texts
from qraft_core.registry import Registry, UnknownName

EVENT_COLUMNS = ("stream", "timestamp", "event_id", "payload")
RESERVED_COLUMNS = frozenset({"stream", "bar_time", "event_count", "window_start", "items"})
Stat = Literal["count", "sum", "mean", "min", "max", "first", "last", "std"]
DEFAULT_STATS: list[Stat] = ["mean", "min", "max", "last", "std"]
AggregateFunction = Callable[[pl.DataFrame, Any, OperatorContext], pl.DataFrame]


@dataclass(frozen=True)
class AggregateMethod:
    name: str
    params_model: type[OperatorParams]
    function: AggregateFunction


AGGREGATE_METHODS: Registry[AggregateMethod] = Registry("method")


def register_aggregate_method(
    name: str, params_model: type[OperatorParams]
) -> Callable[[AggregateFunction], AggregateFunction]:
    """Decorator: `aggregate: {method: <name>, ...}` calls the function with validated params."""

    def register(function: AggregateFunction) -> AggregateFunction:
        AGGREGATE_METHODS.add(name, AggregateMethod(name, params_model, function))
        return function

    return register


def aggregate_method(name: str) -> AggregateMethod:
    try:
        return AGGREGATE_METHODS[name]
    except UnknownName as exc:
        raise OperatorError(f"aggregate: method: {exc}") from None


class StatsParams(OperatorParams):
    # Numeric payload fields; unset: every field whose values in the frame are all numbers.
    fields: list[str] | None = None
    # Fields never summarised (e.g. the time field when it holds epoch numbers).
    exclude: list[str] = Field(default_factory=list)
    stats: list[Stat] = Field(default_factory=lambda: list(DEFAULT_STATS), min_length=1)
    quantiles: list[float] = Field(default_factory=list)
    # Fields whose values are counted per bar: column `<field>_<value>_count`.
    categorical: list[str] = Field(default_factory=list)
    # Values beyond the most frequent `max_categories` of a frame count as `<field>_other_count`.
    max_categories: int = Field(default=20, ge=1)

    @field_validator("quantiles")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for q in value:
            if not 0 < q < 1:
                raise ValueError(f"quantiles must lie strictly between 0 and 1 (got {q})")
        return value


class AggregateParams(OperatorParams):
    method: str = "stats"


@register_operator
class Aggregate(BaseOperator[Any]):
    """Events → bars by `method` (`stats` unless stated); the method's parameters sit beside it.

    >>> from datetime import datetime, UTC
    >>> t1, t2 = datetime(2014, 1, 5, 0, 0, 1, tzinfo=UTC), datetime(2014, 1, 5, 0, 0, 2, tzinfo=UTC)
    >>> events = pl.DataFrame({"stream": ["cpu", "cpu"], "event_id": ["1", "2"], "timestamp": [t1, t2],
    ...     "payload": ['{"value": "-2"}', '{"value": "0"}']})
    >>> bars = Aggregate().apply(events, OperatorContext("cpu", 10))
    >>> bars.select("event_count", "value_mean", "value_min", "value_last", "value_std").row(0)
    (2, -1.0, -2.0, 0.0, 1.0)
    """

    name: ClassVar[str] = "aggregate"
    params_model: ClassVar[type[OperatorParams]] = AggregateParams

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        self.method = aggregate_method(str(self.params.get("method", "stats")))
        rest = {k: v for k, v in self.params.items() if k != "method"}
        try:
            self.options = self.method.params_model.model_validate(rest)
        except ValidationError as exc:
            raise OperatorError(f"aggregate ({self.method.name}): {describe_params_error(exc)}") from None

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
        if missing:
            raise OperatorError(f"aggregate: the frame lacks column(s) {', '.join(missing)}")
        return self.method.function(frame, self.options, context)


def payload_keys(frame: pl.DataFrame) -> list[str]:
    """Top-level keys of the JSON payloads, sorted (payloads that are not objects add none)."""
    keys: set[str] = set()
    for text in frame["payload"].unique().to_list():
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return sorted(keys)


# Statistics square values (spreads here and in every detector): past this magnitude a square, or
# a sum of squares, is no longer a finite float, so such values are left out like non-numbers.
LARGEST_VALUE = 1e150


# Above this many fields, each payload is decoded once for all of them (`payload_texts`) instead of
# scanned once per field by a JSON path, whose cost grows with the payload's width too: for 20,000
# events both took about 1.6 s of CPU at 24 fields; at 50, 3.4 s against 5.7 s; at 2,000, hours.
PER_FIELD_PATHS_MAX = 24


def finite_number(text: pl.Expr) -> pl.Expr:
    """Payload text as a finite Float64, null when absent, not a number or beyond LARGEST_VALUE."""
    number = text.cast(pl.Float64, strict=False)
    return pl.when(number.abs() <= LARGEST_VALUE).then(number)


def numeric_value(name: str) -> pl.Expr:
    """A payload field as a finite Float64 (see `finite_number`)."""
    return finite_number(payload_field(name))


def field_texts(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """The named payload fields as text columns of the frame's height, read the cheaper way for their number."""
    if len(names) > PER_FIELD_PATHS_MAX:
        return payload_texts(frame, names)
    return frame.select(*(payload_field(name).alias(name) for name in names)) if names else pl.DataFrame()


def numbers_only(texts: pl.DataFrame) -> list[str]:
    """The columns of `field_texts` whose every present value is a number (booleans are not)."""
    if texts.width == 0:
        return []
    counts = texts.select(
        *(pl.col(name).is_not_null().sum().alias(f"present{i}") for i, name in enumerate(texts.columns)),
        *(pl.col(name).cast(pl.Float64, strict=False).is_not_null().sum().alias(f"numbers{i}")
          for i, name in enumerate(texts.columns)),
    ).row(0)
    width = texts.width
    return [name for i, name in enumerate(texts.columns) if counts[i] and counts[i] == counts[width + i]]


def numeric_fields(frame: pl.DataFrame, exclude: list[str]) -> list[str]:
    """Fields whose every present value in the frame is a number (booleans are not)."""
    return numbers_only(field_texts(frame, [name for name in payload_keys(frame) if name not in exclude]))


def _label(value: pl.Expr) -> pl.Expr:
    """A category value as part of a column name: letters, digits and underscores."""
    cleaned = value.str.replace_all(r"[^A-Za-z0-9]+", "_").str.strip_chars("_")
    return pl.when(cleaned == "").then(pl.lit("empty")).otherwise(cleaned)


def quantile_label(q: float) -> str:
    """`p50` for 0.5, `p99_9` for 0.999.

    >>> [quantile_label(q) for q in (0.5, 0.95, 0.999)]
    ['p50', 'p95', 'p99_9']
    """
    return "p" + f"{q * 100:.6g}".replace(".", "_")


def _stat(value: pl.Expr, stat: str) -> pl.Expr:
    present = value.count() > 0
    expressions = {
        "count": value.count().cast(pl.Float64),
        "sum": pl.when(present).then(value.sum()),
        "mean": value.mean(),
        "min": value.min(),
        "max": value.max(),
        "first": value.drop_nulls().first(),
        "last": value.drop_nulls().last(),
        # Population deviation: a bar of one value has spread 0, not a missing value.
        "std": value.std(ddof=0),
    }
    return expressions[stat]


def _category_counts(events: pl.DataFrame, field: str, limit: int) -> pl.DataFrame | None:
    values = events.select("stream", "bar_time", payload_field(field).alias("_value")).drop_nulls("_value")
    if values.height == 0:
        return None
    ranked = values.group_by("_value").len().sort(["len", "_value"], descending=[True, False])
    kept = ranked["_value"].head(limit).to_list()
    labelled = values.with_columns(
        pl.when(pl.col("_value").is_in(kept))
        .then(pl.lit(f"{field}_") + _label(pl.col("_value")))
        .otherwise(pl.lit(f"{field}_other"))
        .add(pl.lit("_count"))
        .alias("_column")
    )
    counts = labelled.group_by("stream", "bar_time", "_column").len()
    return counts.pivot(on="_column", index=["stream", "bar_time"], values="len").with_columns(
        pl.exclude("stream", "bar_time").cast(pl.Float64)
    )


@register_aggregate_method("stats", StatsParams)
def per_field_stats(frame: pl.DataFrame, options: StatsParams, context: OperatorContext) -> pl.DataFrame:
    """`event_count`, `F_<stat>` per numeric field and `<field>_<value>_count` per category."""
    excluded = [*options.exclude, *options.categorical]
    events = frame.with_columns(bar_start("timestamp", context.bar_seconds).alias("bar_time")).sort(
        "stream", "timestamp", "event_id"
    )
    if options.fields is None:
        texts = field_texts(events, [name for name in payload_keys(events) if name not in excluded])
        fields = numbers_only(texts)
    else:
        texts = field_texts(events, list(dict.fromkeys(options.fields)))
        fields = options.fields
    # A field named `event` would write `event_count` over the bar's own count.
    clashing = [f for f in fields if any(f"{f}_{stat}" in RESERVED_COLUMNS for stat in options.stats)]
    for name in clashing:
        context.drop(f"aggregate: payload.{name} clashes with a bar column (field left out)", frame.height)
    fields = [f for f in fields if f not in clashing]
    values = pl.DataFrame([events["stream"], events["bar_time"], *(texts[f].alias(f"_t{i}") for i, f in enumerate(fields))])
    values = values.select("stream", "bar_time", *(finite_number(pl.col(f"_t{i}")).alias(f"_v{i}") for i in range(len(fields))))
    if options.fields is not None:
        for i, name in enumerate(fields):
            unusable = events.height - values[f"_v{i}"].count() - texts[name].null_count()
            reason = f"aggregate: payload.{name} is not a finite number of at most {LARGEST_VALUE:g} in size"
            context.drop(f"{reason} (value left out)", unusable)
    columns = [pl.len().cast(pl.UInt32).alias("event_count")]
    for i, name in enumerate(fields):
        value = pl.col(f"_v{i}")
        columns += [_stat(value, stat).alias(f"{name}_{stat}") for stat in options.stats]
        columns += [
            value.quantile(q, interpolation="linear").alias(f"{name}_{quantile_label(q)}")
            for q in options.quantiles
        ]
    bars = values.group_by("stream", "bar_time", maintain_order=True).agg(columns)
    for field in options.categorical:
        counts = _category_counts(events, field, options.max_categories)
        if counts is not None:
            bars = bars.join(counts, on=["stream", "bar_time"], how="left").with_columns(
                pl.col(c).fill_null(0.0) for c in counts.columns if c not in ("stream", "bar_time")
            )
    return bars.sort("stream", "bar_time")
