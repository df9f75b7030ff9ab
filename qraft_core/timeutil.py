"""Time values: every instant is an aware UTC datetime, written as ISO 8601 with a Z.

>>> parse_iso("2026-01-05T10:00:00Z") == parse_iso("2026-01-05T11:00:00+01:00") == parse_iso("2026-01-05T10:00")
True
>>> iso(parse_iso(" 2026-01-05T10:00:00.5z "))
'2026-01-05T10:00:00.500Z'
>>> iso(parse_iso("1949-01"))  # a month (ISO 8601 reduced precision): its first instant
'1949-01-01T00:00:00.000Z'
>>> iso(parse_iso("2024-01-01 13:00:00 UTC")), iso(parse_iso("2024-07-01T13:00[Europe/Paris]"))
('2024-01-01T13:00:00.000Z', '2024-07-01T11:00:00.000Z')
>>> iso(parse_iso("2016-12-31T23:59:60Z"))  # a leap second: the instant after 23:59:59
'2017-01-01T00:00:00.000Z'
>>> parse_iso("2024-03-10T02:30 America/New_York")
Traceback (most recent call last):
...
ValueError: 2024-03-10T02:30 does not exist in America/New_York (its clocks skip it)
>>> parse_iso("yesterday")
Traceback (most recent call last):
...
ValueError: Invalid isoformat string: 'yesterday'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_YEAR_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
# A zone after the time: "UTC"/"GMT", or a tz database name, after a blank or in brackets as RFC 9557
# writes it ("2024-03-10T09:00-04:00[America/New_York]").
_ZONE = re.compile(r"(?:\s+|\[)(UTC|GMT|[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)+)\]?$", re.IGNORECASE)
# An offset after a time of day ("10:00+01", "10:00:00.5 -0800"), not the day of a date ("2014-02-01").
_OFFSET = re.compile(r"\d:\d\d(:\d\d(\.\d+)?)?\s*[+-]\d\d(:?\d\d)?$")
_LEAP_SECOND = re.compile(r"(\d{2}:\d{2}:)60(?=\D|$)")


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

    A zone name may follow ("UTC", "Europe/Paris"); an offset, when written too, says the instant. A local
    time a clock change skips is refused; one it repeats is its first occurrence.
    Raises ValueError for anything else; callers word it for their input.
    """
    stripped = text.strip()
    if _YEAR_MONTH.fullmatch(stripped):  # monthly series are written so; fromisoformat refuses it
        stripped += "-01"
    try:  # the common case first: a zone name or a leap second costs a failed attempt, not every time
        return _instant(stripped, None)
    except ValueError:
        if not (_ZONE.search(stripped) or _LEAP_SECOND.search(stripped)):
            raise
    zone = None
    if named := _ZONE.search(stripped):
        stripped = stripped[:named.start()]
        zone = _zone(named.group(1))
    stripped, leap = _LEAP_SECOND.subn(r"\g<1>59", stripped, count=1)
    return _instant(stripped, zone) + timedelta(seconds=leap)


def _instant(text: str, zone: ZoneInfo | None) -> datetime:
    """ISO 8601 text as aware UTC, local to `zone` when it has no offset."""
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if zone is not None and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
            if utc(parsed).astimezone(zone).replace(tzinfo=None) != parsed.replace(tzinfo=None):
                raise ValueError(f"{text} does not exist in {zone} (its clocks skip it)")
        return utc(parsed)
    except OverflowError:  # an offset moving 9999-12-31 or 0001-01-01 out of datetime's range
        raise ValueError(f"{text} is out of range") from None


def names_zone(text: str) -> bool:
    """Whether ISO 8601 text says its zone: a Z, an offset or a zone name.

    >>> names_zone("2014-02-01 10:00"), names_zone("2014-02-01T10:00+0100"), names_zone("2014-02-01 10:00 UTC")
    (False, True, True)
    >>> names_zone("2014-02-01"), names_zone("2014-02-01 10:00:00.5-08")
    (False, True)
    """
    stripped = text.strip()
    return stripped[-1:] in ("Z", "z") or bool(_OFFSET.search(stripped) or _ZONE.search(stripped))


def _zone(name: str) -> ZoneInfo:
    if name.upper() in ("UTC", "GMT"):
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name} is not a time zone") from None
