"""Time values: every instant is an aware UTC datetime, written as ISO 8601 with a Z.

>>> parse_iso("2026-01-05T10:00:00Z") == parse_iso("2026-01-05T11:00:00+01:00") == parse_iso("2026-01-05T10:00")
True
>>> iso(parse_iso(" 2026-01-05T10:00:00.5z "))
'2026-01-05T10:00:00.500Z'
>>> iso(parse_iso("1949-01"))  # a month (ISO 8601 reduced precision): its first instant
'1949-01-01T00:00:00.000Z'
>>> parse_iso("yesterday")
Traceback (most recent call last):
...
ValueError: Invalid isoformat string: 'yesterday'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_YEAR_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def utc(ts: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    """ISO 8601 with milliseconds and a Z suffix, the format of every event field.

    >>> iso(datetime(2026, 1, 5, 0, 0, 1, 123456, tzinfo=UTC))
    '2026-01-05T00:00:01.123Z'
    """
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc(ts).microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """ISO 8601 text (a Z, an offset, or none for UTC; surrounding blanks ignored) as aware UTC.

    Raises ValueError for anything else; callers word it for their input.
    """
    stripped = text.strip()
    if _YEAR_MONTH.fullmatch(stripped):  # monthly series are written so; fromisoformat refuses it
        stripped += "-01"
    if stripped[-1:] in ("Z", "z"):
        stripped = stripped[:-1] + "+00:00"
    return utc(datetime.fromisoformat(stripped))
