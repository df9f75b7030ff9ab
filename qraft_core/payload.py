"""Reading one top-level field of the JSON payloads of a frame (the one way every layer does it).

Field names come from users' files and messages: spaces, dots, brackets, units
(`Water flow [l/s]`) and quotes are all legal JSON keys. A dotted `$.name` path
reads `a.b` as a nested field and returns nothing for `Water flow [l/s]`, so the
name is quoted; the few names the JSON path syntax cannot quote (a backslash, or
both kinds of quote) are read by decoding the payload.

>>> import polars as pl
>>> frame = pl.DataFrame({"payload": ['{"Water flow [l/s]": 1.5, "a.b": -2, "say \\\\"hi\\\\"": "x", "b\\\\\\\\s": true}']})
>>> frame.select(*(payload_field(n).alias(n) for n in ["Water flow [l/s]", "a.b", 'say "hi"', "b\\\\s", "absent"])).row(0)
('1.5', '-2', 'x', 'true', None)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl


def _as_text(value: Any) -> str | None:
    """A JSON value as `json_path_match` gives it: strings bare, everything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _fields(payload: str | None) -> dict[str, Any]:
    """The payload's top-level fields as `json_path_match` sees them: none when it is not a JSON
    object, or holds an integer no float holds anywhere (`json_path_match` cannot read it at all).

    >>> _fields('{"a": 1}'), _fields('[1]'), _fields('{"a": 1, "b": [%d]}' % 10**400)
    ({'a': 1}, {}, {})
    """
    try:
        data = json.loads(payload) if payload is not None else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) and not _beyond_float(data) else {}


def _beyond_float(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | list | dict):
        return False
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return True
        return False
    return any(_beyond_float(inner) for inner in (value.values() if isinstance(value, dict) else value))


def _decoded_field(name: str, payload: str | None) -> str | None:
    return _as_text(_fields(payload).get(name))


def payload_texts(frame: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """The named top-level payload fields as text columns, as `payload_field` reads each, from one
    decoding of each payload. A JSON path per field scans every payload once per field: for payloads
    of hundreds of fields that costs the square of their width (2,000 columns of 300 rows took hours).

    >>> frame = pl.DataFrame({"payload": ['{"a": 1.5, "b": "x"}', "not JSON", '{"b": true}']})
    >>> payload_texts(frame, ["a", "b"]).rows()
    [('1.5', 'x'), (None, None), (None, 'true')]
    """
    columns: list[list[str | None]] = [[] for _ in names]
    for payload in frame["payload"]:
        fields = _fields(payload)
        for name, values in zip(names, columns, strict=True):
            values.append(_as_text(fields.get(name)))
    # A mapping keeps a field named "" (a list of unnamed series would be renamed column_0).
    return pl.DataFrame({name: pl.Series(values, dtype=pl.Utf8) for name, values in zip(names, columns, strict=True)})


def payload_field(name: str) -> pl.Expr:
    """One top-level field of the JSON payload, as text (numbers and booleans as written)."""
    for quote in ('"', "'"):
        if quote not in name and "\\" not in name:
            return pl.col("payload").str.json_path_match(f"$[{quote}{name}{quote}]")
    return pl.col("payload").map_elements(
        lambda payload: _decoded_field(name, payload), return_dtype=pl.Utf8, skip_nulls=False
    )
