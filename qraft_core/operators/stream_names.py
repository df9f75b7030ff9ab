"""The one rule for stream names: what the splitter makes of a key, and what the API takes as a filter.

A stream name is a filter value when it holds no control character and has at most
`MAX_STREAM_NAME_CHARS` characters. The splitter turns any other name into one, the same way on every
run (replays give the same names): each control character is written as `\\xNN`, a name still too long
is cut, and a name that had to change ends with `~` and 12 hex digits of the original's SHA-256, so
two keys that differ only in what was cut or replaced stay two streams.

>>> stream_name("hosts:web\\x1b[2J")
'hosts:web\\\\x1b[2J~8858eb71a91f'
>>> long = stream_name("hosts:" + "L" * 10_000)
>>> len(long), long[:8], long[-13:] == stream_name("hosts:" + "L" * 10_000)[-13:]
(256, 'hosts:LL', True)
>>> stream_name("hosts:web-1"), stream_name_problem("hosts:web\\n"), stream_name_problem("h" * 257)
('hosts:web-1', 'control characters are not allowed', 'longer than 256 characters')
"""

from __future__ import annotations

import hashlib
import re

import polars as pl

# The API's limit on a stream filter (query parameters `stream` and `source`).
MAX_STREAM_NAME_CHARS = 256
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_HASH_DIGITS = 12
_CHANGED_MARK = "~"


def stream_name_problem(name: str) -> str | None:
    """Why `name` cannot be a stream filter, or None when it can."""
    if CONTROL_CHARACTERS.search(name):
        return "control characters are not allowed"
    if len(name) > MAX_STREAM_NAME_CHARS:
        return f"longer than {MAX_STREAM_NAME_CHARS} characters"
    return None


def stream_name(name: str) -> str:
    """`name` itself when it is a valid filter value, else the valid name the rule above makes of it."""
    if stream_name_problem(name) is None:
        return name
    escaped = CONTROL_CHARACTERS.sub(lambda found: f"\\x{ord(found.group()):02x}", name)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    kept = MAX_STREAM_NAME_CHARS - len(_CHANGED_MARK) - _HASH_DIGITS
    return escaped[:kept] + _CHANGED_MARK + digest


def stream_names(names: pl.Series) -> pl.Series:
    """`stream_name` of each name; the few distinct names that must change are changed once each."""
    distinct = names.drop_nulls().unique()
    invalid = distinct.filter(
        distinct.str.contains(CONTROL_CHARACTERS.pattern) | (distinct.str.len_chars() > MAX_STREAM_NAME_CHARS)
    ).to_list()
    if not invalid:
        return names
    return names.replace(invalid, [stream_name(name) for name in invalid])
