"""`derive`: new bar columns from arithmetic on existing ones, in a small safe grammar.

Expressions are parsed by a recursive-descent parser into polars expressions;
nothing is ever evaluated as Python. The grammar:

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := "-" unary | atom
    atom  := NUMBER | COLUMN | FUNC "(" expr ")" | "(" expr ")"
    FUNC  := log | exp | abs | sqrt | prev

`prev(x)` is `x` in the stream's previous bar if that bar is at most
`max_gap_bars` bars earlier. A value that is undefined (no previous bar,
division by zero, log of a non-positive number) is 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import polars as pl
from pydantic import Field, field_validator

from qraft_core.operators.base import (
    OperatorContext,
    OperatorError,
    OperatorParams,
    TrailingOperator,
    register_operator,
)

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/()]))"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED = {"stream", "bar_time", "event_count", "items", "window_start"}

_FUNCTIONS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "log": lambda x: x.log(),
    "exp": lambda x: x.exp(),
    "abs": lambda x: x.abs(),
    "sqrt": lambda x: x.sqrt(),
}


class DeriveError(OperatorError):
    """An expression outside the grammar."""


@dataclass
class ParsedExpression:
    """A parsed expression: a builder of its polars expression plus what it reads."""

    build: Callable[[timedelta], pl.Expr]
    columns: set[str] = field(default_factory=set)
    prev_depth: int = 0


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise DeriveError(f"unexpected character {text[position:].lstrip()[:1]!r} in {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_expression(text: str) -> ParsedExpression:
    """Parse one expression of the grammar.

    >>> sorted(parse_expression("log(close / prev(close))").columns)
    ['close']
    >>> parse_expression("__import__('os')")
    Traceback (most recent call last):
    ...
    qraft_core.operators.derive.DeriveError: unexpected character "'" in "__import__('os')"
    >>> parse_expression("__import__(close)")
    Traceback (most recent call last):
    ...
    qraft_core.operators.derive.DeriveError: unknown function '__import__' in '__import__(close)' \
(known: abs, exp, log, prev, sqrt)
    """
    tokens = _tokens(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal position
        token = peek()
        if token is None:
            raise DeriveError(f"{text!r} ends too early")
        if expected is not None and token[1] != expected:
            raise DeriveError(f"expected {expected!r} but found {token[1]!r} in {text!r}")
        position += 1
        return token

    def binary(operand: Callable[[], ParsedExpression], ops: str) -> ParsedExpression:
        left = operand()
        while (token := peek()) is not None and token[0] == "op" and token[1] in ops:
            take()
            right = operand()
            left = _combine(token[1], left, right)
        return left

    def expr() -> ParsedExpression:
        return binary(term, "+-")

    def term() -> ParsedExpression:
        return binary(unary, "*/")

    def unary() -> ParsedExpression:
        token = peek()
        if token == ("op", "-"):
            take()
            inner = unary()
            return ParsedExpression(lambda gap: -inner.build(gap), inner.columns, inner.prev_depth)
        return atom()

    def atom() -> ParsedExpression:
        kind, value = take()
        if kind == "number":
            number = float(value)
            return ParsedExpression(lambda gap: pl.lit(number, dtype=pl.Float64))
        if kind == "op" and value == "(":
            inner = expr()
            take(")")
            return inner
        if kind == "name":
            if peek() == ("op", "("):
                take("(")
                argument = expr()
                take(")")
                return _call(value, argument, text)
            column = value
            return ParsedExpression(lambda gap: pl.col(column).cast(pl.Float64), {column})
        raise DeriveError(f"unexpected {value!r} in {text!r}")

    parsed = expr()
    if position != len(tokens):
        raise DeriveError(f"unexpected {tokens[position][1]!r} in {text!r}")
    return parsed


def _combine(op: str, left: ParsedExpression, right: ParsedExpression) -> ParsedExpression:
    operators: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }
    apply = operators[op]
    return ParsedExpression(
        lambda gap: apply(left.build(gap), right.build(gap)),
        left.columns | right.columns,
        max(left.prev_depth, right.prev_depth),
    )


def _call(name: str, argument: ParsedExpression, text: str) -> ParsedExpression:
    if name == "prev":

        def previous(gap: timedelta) -> pl.Expr:
            step = pl.col("bar_time") - pl.col("bar_time").shift(1).over("stream")
            return pl.when(step <= gap).then(argument.build(gap).shift(1).over("stream"))

        return ParsedExpression(previous, argument.columns, argument.prev_depth + 1)
    function = _FUNCTIONS.get(name)
    if function is None:
        known = ", ".join(sorted([*_FUNCTIONS, "prev"]))
        raise DeriveError(f"unknown function {name!r} in {text!r} (known: {known})")
    return ParsedExpression(lambda gap: function(argument.build(gap)), argument.columns, argument.prev_depth)


class DeriveParams(OperatorParams):
    # New column name → expression, computed in order (later ones may use earlier ones).
    columns: dict[str, str] = Field(min_length=1)
    max_gap_bars: int = Field(default=6, ge=1)

    @field_validator("columns")
    @classmethod
    def _parse(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _NAME.match(name) or name in RESERVED:
                raise ValueError(f"{name!r} cannot be a column name")
            parse_expression(text)
        return value


@register_operator
class Derive(TrailingOperator[DeriveParams]):
    """Computes `columns` on bars.

    >>> from datetime import datetime, UTC
    >>> bars = pl.DataFrame({"stream": ["s", "s"], "bar_time": [datetime(2026, 1, 5, 0, 0, 0, tzinfo=UTC),
    ...     datetime(2026, 1, 5, 0, 0, 10, tzinfo=UTC)], "close": [100.0, 110.0]})
    >>> op = Derive({"columns": {"ret": "close / prev(close) - 1"}})
    >>> [round(v, 6) for v in op.apply(bars, OperatorContext("x", 10))["ret"]]
    [0.0, 0.1]
    """

    name: ClassVar[str] = "derive"
    params_model: ClassVar[type[OperatorParams]] = DeriveParams

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._parsed = {name: parse_expression(text) for name, text in self.options.columns.items()}

    @property
    def lookback_bars(self) -> int:
        depth = max(parsed.prev_depth for parsed in self._parsed.values())
        return depth * self.options.max_gap_bars

    def required_columns(self) -> list[str]:
        produced: set[str] = set()
        needed: list[str] = []
        for name, parsed in self._parsed.items():
            needed += sorted(c for c in parsed.columns - produced if c not in needed)
            produced.add(name)
        return needed

    def state_columns(self) -> list[str]:
        return [*self.required_columns(), *(c for c in self._parsed if c not in self.required_columns())]

    def compute(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        gap = context.bar * self.options.max_gap_bars
        for name, parsed in self._parsed.items():
            value = parsed.build(gap)
            value = pl.when(value.is_finite()).then(value).otherwise(0.0)
            if name in frame.columns:
                # History rows keep the value they were stored with.
                value = pl.when(pl.col("_new")).then(value).otherwise(pl.col(name))
            frame = frame.with_columns(value.alias(name))
        return frame
