"""The operator contract and the registry operators are found in by name.

An operator turns one polars frame into another. Event-level operators see one
row per clean event (columns `event_id`, `source`, `type`, `timestamp`,
`payload` and `stream`); bar-level operators see one row per (`stream`,
`bar_time`) with `event_count`, numeric feature columns and, for text, `items`.

Operators keep their parameters exactly as given (`params`) and a validated
copy (`options`). A stateful operator needs bars from before the frame it is
given (a trailing window); it carries them between calls and can hand them over
as a plain dict (`get_state`) so the next process resumes from it
(`from_state`). Results never depend on where a range was cut into calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, runtime_checkable

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from qraft_core.registry import Registry, UnknownName

BAR_KEYS = ("stream", "bar_time")
BAR_TIME_DTYPE = pl.Datetime("ms", "UTC")


class OperatorError(ValueError):
    """An operator cannot run on the frame or parameters it was given."""


class OperatorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class OperatorContext:
    """What an operator may know beyond its frame."""

    source: str
    bar_seconds: int
    # Final bar frames of sources already processed in this run, for `join`.
    bars: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    # Rows an operator dropped as unusable, by reason (reported as metadata).
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def bar(self) -> timedelta:
        return timedelta(seconds=self.bar_seconds)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count


@runtime_checkable
class Operator(Protocol):
    name: ClassVar[str]
    stateful: ClassVar[bool]
    params: dict[str, Any]

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame: ...


@runtime_checkable
class StatefulOperator(Operator, Protocol):
    # How many bars before a row the operator reads.
    lookback_bars: int

    def get_state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, params: Mapping[str, Any], state: Mapping[str, Any]) -> Self: ...


P = TypeVar("P", bound=OperatorParams)


class BaseOperator(Generic[P]):
    """Shared construction: validate `params` with the class's `params_model`."""

    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    params_model: ClassVar[type[OperatorParams]] = OperatorParams

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})
        try:
            self.options: P = self.params_model.model_validate(self.params)  # type: ignore[assignment]
        except ValidationError as exc:
            raise OperatorError(f"{self.name}: {describe_params_error(exc)}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        raise NotImplementedError


def describe_params_error(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "<params>"
        message = "an unknown parameter" if problem["type"] == "extra_forbidden" else problem["msg"]
        found = problem.get("input")
        shown = "" if isinstance(found, (dict, list)) or problem["type"] == "missing" else f" (got {found!r})"
        parts.append(f"{key}: {message}{shown}")
    return "; ".join(parts)


class TrailingOperator(BaseOperator[P]):
    """A bar-level operator reading the `lookback_bars` bars before each row.

    It keeps the last `lookback_bars` of each stream it has seen (its state)
    and puts them before the next frame, so cutting a range into calls changes
    nothing. History rows keep the values they had when they were new.
    """

    stateful: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._tail = pl.DataFrame()

    @property
    def lookback_bars(self) -> int:
        raise NotImplementedError

    def required_columns(self) -> list[str]:
        """Columns the frame must bring."""
        raise NotImplementedError

    def state_columns(self) -> list[str]:
        """Columns kept for the trailing bars (what `compute` reads from history rows)."""
        return self.required_columns()

    def compute(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        """The operator's columns over `frame`, sorted by stream and bar_time; `_new` marks
        the rows to compute (the others are history)."""
        raise NotImplementedError

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        missing = [c for c in self.required_columns() if c not in frame.columns]
        if missing:
            raise OperatorError(f"{self.name}: the frame lacks column(s) {', '.join(missing)}")
        new = frame.with_columns(pl.lit(True).alias("_new"))
        history = self._tail
        if frame.height and history.height:
            history = history.filter(pl.col("bar_time") < frame["bar_time"].min())
        if history.height:
            history = history.with_columns(
                pl.col("bar_time").cast(frame.schema["bar_time"]), pl.lit(False).alias("_new")
            )
            new = pl.concat([history, new], how="diagonal_relaxed")
        result = self.compute(new.sort(BAR_KEYS), context)
        if result.height:
            self._remember(result.select(["stream", "bar_time", *self.state_columns()]), context)
        return result.filter(pl.col("_new")).drop("_new")

    def _remember(self, seen: pl.DataFrame, context: OperatorContext) -> None:
        horizon = context.bar * self.lookback_bars
        latest = pl.col("bar_time").max().over("stream")
        self._tail = seen.filter(pl.col("bar_time") >= latest - horizon)

    def get_state(self) -> dict[str, Any]:
        """The trailing bars as plain lists (bar_time in epoch milliseconds)."""
        if self._tail.height == 0:
            return {"columns": {}}
        return {
            "columns": self._tail.with_columns(pl.col("bar_time").dt.epoch("ms")).to_dict(as_series=False)
        }

    @classmethod
    def from_state(cls, params: Mapping[str, Any], state: Mapping[str, Any]) -> Self:
        operator = cls(params)
        columns = state.get("columns") or {}
        if columns:
            tail = pl.DataFrame(columns).with_columns(
                pl.from_epoch("bar_time", time_unit="ms").dt.replace_time_zone("UTC").cast(BAR_TIME_DTYPE)
            )
            absent = [c for c in operator.state_columns() if c not in tail.columns]
            tail = tail.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in absent)
            operator._tail = tail.select(["stream", "bar_time", *operator.state_columns()])
        return operator

    def with_history(self, history: pl.DataFrame) -> Self:
        """A fresh copy whose trailing bars come from `history` (a wide features frame)."""
        if history.height == 0:
            return type(self)(self.params)
        keep = [c for c in ("stream", "bar_time", *self.state_columns()) if c in history.columns]
        tail = history.select(keep).with_columns(pl.col("bar_time").cast(BAR_TIME_DTYPE).dt.epoch("ms"))
        return type(self).from_state(self.params, {"columns": tail.to_dict(as_series=False)})


OperatorClass = type[BaseOperator[Any]]
C = TypeVar("C", bound=OperatorClass)
OPERATORS: Registry[OperatorClass] = Registry("operator")


def register_operator(cls: C) -> C:
    """Class decorator: make an operator available by its `name` in preprocessing.yaml."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    OPERATORS.add(cls.name, cls)
    return cls


def build_operator(name: str, params: Mapping[str, Any] | None = None) -> BaseOperator[Any]:
    """The registered operator `name` with `params`; OperatorError names what is wrong.

    >>> build_operator("normalize", {"fields": ["volume"], "window": 30}).params
    {'fields': ['volume'], 'window': 30}
    >>> build_operator("sharpen")
    Traceback (most recent call last):
    ...
    qraft_core.operators.base.OperatorError: unknown operator 'sharpen' (known: aggregate, derive, \
join, keyword_extract, normalize, text_clean)
    """
    try:
        cls = OPERATORS[name]
    except UnknownName as exc:
        raise OperatorError(str(exc)) from None
    return cls(params)


def bar_start(column: str, bar_seconds: int) -> pl.Expr:
    """The start of the bar holding each time (bars are aligned to the Unix epoch)."""
    return pl.col(column).dt.truncate(f"{bar_seconds}s").cast(BAR_TIME_DTYPE)


def empty_bars(**columns: pl.DataType) -> pl.DataFrame:
    return pl.DataFrame(
        schema={"stream": pl.Utf8, "bar_time": BAR_TIME_DTYPE, "event_count": pl.UInt32, **columns}
    )
