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
from typing import Any

import polars as pl


def _as_text(value: Any) -> str | None:
    """A JSON value as `json_path_match` gives it: strings bare, everything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _decoded_field(name: str, payload: str | None) -> str | None:
    try:
        data = json.loads(payload) if payload is not None else None
    except ValueError:
        return None
    return _as_text(data.get(name)) if isinstance(data, dict) else None


def payload_field(name: str) -> pl.Expr:
    """One top-level field of the JSON payload, as text (numbers and booleans as written)."""
    for quote in ('"', "'"):
        if quote not in name and "\\" not in name:
            return pl.col("payload").str.json_path_match(f"$[{quote}{name}{quote}]")
    return pl.col("payload").map_elements(
        lambda payload: _decoded_field(name, payload), return_dtype=pl.Utf8, skip_nulls=False
    )
