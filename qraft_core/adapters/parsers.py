"""Record parsers: one raw record (a dict) → the fields of a standard event.

A parser extracts the event time, a stable id and the payload; nothing else.
Parsers are chosen by name in `sources.yaml` (`parser:`).
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from qraft_core.events import MAX_NESTING, MAX_RECORD_BYTES, content_problem, safe_text, stable_id
from qraft_core.registry import Registry, UnknownName
from qraft_core.timeutil import parse_iso

# "excel": spreadsheet serial dates, days since 1899-12-30 with the time of day as the fraction (45292.5 is
# 2024-01-01 12:00), as a date column becomes in a sheet saved without its number format.
TimeUnit = Literal["auto", "s", "ms", "us", "ns", "iso", "excel"]
# Thousands separators a number may be written with ("1,234.5", "1 234", "1'234"); the decimal mark is
# then ".". A "." between groups is not one: "1.234" already reads as a plain number.
ThousandsSeparator = Literal[",", " ", "\u00a0", "\u202f", "'", "_"]
THOUSANDS_SEPARATORS: tuple[str, ...] = get_args(ThousandsSeparator)
_GROUPED = {sep: re.compile(rf"[+-]?[1-9]\d{{0,2}}(?:{re.escape(sep)}\d{{3}})+(?:\.\d+)?") for sep in THOUSANDS_SEPARATORS}
# A number written with a decimal comma, its thousands (if any) grouped by "." or a blank: "-1,5", "1.234,5".
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:([. \u00a0\u202f])\d{3})(?:\1\d{3})*|\d+)(?:,\d+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXCEL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)


class ParseError(ValueError):
    """The record cannot become an event; the message says why."""


def parse_time(value: Any, unit: TimeUnit = "auto") -> datetime:
    """An event time from epoch numbers or ISO text.

    With `auto`, epoch numbers are read by magnitude, so seconds, milliseconds,
    microseconds and nanoseconds are never confused by a factor of 1000.

    >>> parse_time(1767571200).isoformat()
    '2026-01-05T00:00:00+00:00'
    >>> parse_time(1767571200123).isoformat()
    '2026-01-05T00:00:00.123000+00:00'
    >>> parse_time(1767571200123456).isoformat()
    '2026-01-05T00:00:00.123456+00:00'
    >>> parse_time("2026-01-05T00:00:00.5Z").isoformat()
    '2026-01-05T00:00:00.500000+00:00'
    >>> parse_time("45292.000694444", "excel").isoformat()
    '2024-01-01T00:01:00+00:00'
    >>> parse_time("soon")
    Traceback (most recent call last):
    ...
    qraft_core.adapters.parsers.ParseError: timestamp 'soon' is neither an epoch number nor ISO 8601
    >>> parse_time("2024-03-10T02:30 America/New_York")
    Traceback (most recent call last):
    ...
    qraft_core.adapters.parsers.ParseError: timestamp '2024-03-10T02:30 America/New_York' is not a time: 2024-03-10T02:30 does not exist in America/New_York (its clocks skip it)
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):  # a day (a Parquet date column): its first instant
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value is None or value == "":
        raise ParseError("timestamp is missing")
    number: float | None = None
    if isinstance(value, bool):
        raise ParseError(f"timestamp {value!r} is not a time")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise ParseError(f"timestamp {safe_text(value, 40)}… is out of range") from None
    elif isinstance(value, str) and unit != "iso":
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None:
        if not math.isfinite(number) or number < 0:
            raise ParseError(f"timestamp {value!r} is not a valid epoch time")
        if unit == "excel":
            try:  # whole milliseconds: a day's fraction is seldom exact in binary
                return _EXCEL_EPOCH + timedelta(milliseconds=round(number * 86_400_000))
            except OverflowError:
                raise ParseError(f"timestamp {value!r} is out of range") from None
        if unit in ("auto", "iso"):
            unit = "s" if number < 1e11 else "ms" if number < 1e14 else "us" if number < 1e17 else "ns"
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
        whole = int(number // scale) if unit != "s" else int(number)
        micros = round((number - whole * scale) * 1e6 / scale) if unit != "s" else round((number - whole) * 1e6)
        try:
            return _EPOCH + timedelta(seconds=whole, microseconds=micros)
        except OverflowError as exc:
            raise ParseError(f"timestamp {value!r} is out of range") from exc
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError as exc:
            # fromisoformat's own words name no reason; parse_iso's (a skipped local time, an unknown zone) do.
            reason = "is neither an epoch number nor ISO 8601" if "isoformat" in str(exc) else f"is not a time: {exc}"
            raise ParseError(f"timestamp {safe_text(value, 100)!r} {reason}") from None
    raise ParseError(f"timestamp {value!r} is not a time")


def grouped_number(text: str, separator: str) -> int | float | None:
    """`text` as a number when it is written with `separator` between groups of three digits, else None
    (plain numbers included: they need no help).

    >>> grouped_number("1,234.5", ","), grouped_number(" -12 345 678 ", " "), grouped_number("1,23", ",")
    (1234.5, -12345678, None)
    >>> grouped_number("1234", ","), grouped_number("1,234", " "), grouped_number("0,125", ",")
    (None, None, None)
    """
    plain = text.strip()
    if not _GROUPED[separator].fullmatch(plain):
        return None
    digits = plain.replace(separator, "")
    return float(digits) if "." in digits else int(digits)


def decimal_comma_number(text: str) -> int | float | None:
    """`text` as a number when it is written with a decimal comma (thousands grouped by "." or a blank),
    else None.

    >>> decimal_comma_number("-1,5"), decimal_comma_number("1.234,56"), decimal_comma_number(" 12 345 "), decimal_comma_number("7")
    (-1.5, 1234.56, 12345, 7)
    >>> decimal_comma_number("1.5"), decimal_comma_number("1,234.5"), decimal_comma_number("1.234 567,8")
    (None, None, None)
    """
    plain = text.strip()
    if not _DECIMAL_COMMA.fullmatch(plain):
        return None
    digits = re.sub(r"[. \u00a0\u202f]", "", plain).replace(",", ".")
    return float(digits) if "." in digits else int(digits)


# A number with a unit after it: "12%", "250 ms", "-3.5 °C" (group 1 the number, group 2 the unit).
_WITH_UNIT = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\d\s.,+-][^\d]*?)")


def unit_number(text: str, unit: str | None = None) -> tuple[float, str] | None:
    """(the number, its unit) of text written as a number with a unit after it ("12%", "250 ms"), else None;
    with `unit`, only that unit.

    >>> unit_number("12%"), unit_number(" 250 ms ", "ms"), unit_number("-3.5 °C"), unit_number("12", "%")
    ((12.0, '%'), (250.0, 'ms'), (-3.5, '°C'), None)
    >>> unit_number("1e3x"), unit_number("0x1F"), unit_number("2024-01-01"), unit_number("12 ms", "%")
    ((1000.0, 'x'), None, None, None)
    """
    match = _WITH_UNIT.fullmatch(text.strip())
    if match is None or (unit is not None and match.group(2) != unit):
        return None
    return float(match.group(1)), match.group(2)


def parse_time_format(value: Any, fmt: str) -> datetime:
    """An event time written as `fmt` says (`strptime` codes); without an offset in it, UTC.

    >>> parse_time_format("31/12/2014 23:05", "%d/%m/%Y %H:%M").isoformat()
    '2014-12-31T23:05:00+00:00'
    >>> parse_time_format("12/31/2014", "%d/%m/%Y")
    Traceback (most recent call last):
    ...
    qraft_core.adapters.parsers.ParseError: timestamp '12/31/2014' does not match the time format '%d/%m/%Y'
    """
    if isinstance(value, datetime):
        return parse_time(value)
    try:
        parsed = datetime.strptime(str(value).strip(), fmt)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise ParseError(f"timestamp {safe_text(value, 100)!r} does not match the time format {fmt!r}") from None
    except OverflowError:  # an offset moving 9999-12-31 out of range
        raise ParseError(f"timestamp {safe_text(value, 100)!r} is out of range") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ValueError(f"{text} is not a finite number")
    return value


# Decodes without NaN/Infinity, so every payload is valid JSON for the events built from it.
_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_json_record(raw: bytes | str) -> tuple[dict[str, Any] | None, str]:
    """(record, "") for a JSON object, else (None, why it "is not" one): oversize, not UTF-8, not JSON,
    nested deeper than `MAX_NESTING`, not an object. Never raises.

    >>> decode_json_record(b'{"a": 1}'), decode_json_record(b'\\xef\\xbb\\xbf{"a": 1}')
    (({'a': 1}, ''), ({'a': 1}, ''))
    >>> decode_json_record(b"[" * 5000 + b"]" * 5000)[1]
    'is nested deeper than 64 levels'
    >>> decode_json_record(b'{"a": "caf\\xe9"}')[1]
    'is not UTF-8: invalid continuation byte at byte 10'
    >>> decode_json_record(b"[1]")[1]
    'is not a JSON object'
    >>> decode_json_record(b'{"id": "\\\\ud800"}')[1]
    'is not usable: record.id holds text that is not valid Unicode (a lone surrogate)'
    """
    size = len(raw)
    if size > MAX_RECORD_BYTES:
        return None, f"is oversize: {size} bytes > {MAX_RECORD_BYTES}"
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8: {exc.reason} at byte {exc.start}"
    text = text.removeprefix("\ufeff")  # the byte order mark some editors write before a file's first line
    # Brackets bound the depth from above: only a suspicious line pays for the exact check.
    if text.count("[") + text.count("{") > MAX_NESTING and json_depth(text) > MAX_NESTING:
        return None, f"is nested deeper than {MAX_NESTING} levels"
    try:
        record = _STRICT_JSON.decode(text)
    except ValueError as exc:
        return None, f"is not JSON: {safe_text(exc, 200)}"
    except RecursionError:
        return None, f"is nested deeper than {MAX_NESTING} levels"
    if not isinstance(record, dict):
        return None, "is not a JSON object"
    # Text that is not Unicode (a lone surrogate) can only arrive as a \\u escape.
    problem = content_problem(record, "record") if "\\u" in text else None
    if problem:
        return None, f"is not usable: {problem}"
    return record, ""


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, outside strings (no parse, no recursion).

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def raw_json(record: object) -> bytes:
    """The bytes a dead letter keeps of a record that was not read from bytes (never raises)."""
    try:
        return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()
    except (ValueError, TypeError, RecursionError):
        return safe_text(record, 16 * 1024).encode()


@dataclass(frozen=True)
class ParsedRecord:
    event_id: str
    type: str
    timestamp: datetime
    payload: dict[str, Any]


class GenericOptions(BaseModel):
    """How a generic record maps to an event."""

    model_config = ConfigDict(extra="forbid")

    id_field: str | None = None
    time_field: str = "timestamp"
    time_unit: TimeUnit = "auto"
    # Times written otherwise than ISO 8601 or epoch numbers, as `strptime` codes ("%d/%m/%Y %H:%M");
    # set, it replaces `time_unit`.
    time_format: str | None = None
    # The time of day in a field of its own ("10:05:00"), the date in `time_field`: the event time is
    # "<date> <time of day>", read as `time_unit` ("iso") or `time_format` says.
    time_of_day_field: str | None = None
    event_type: str = "record"
    # Rename fields of the record before they become the payload: {from: to}.
    rename: dict[str, str] = {}
    # Fields every record must have (after renaming).
    required: list[str] = []
    # Fields (after renaming) whose numbers are written with a thousands separator: {field: separator}.
    thousands: dict[str, ThousandsSeparator] = {}
    # Fields (after renaming) whose numbers are written with a decimal comma ("1,5", "1.234,5").
    decimal_comma: list[str] = []
    # Fields (after renaming) whose numbers are written with a unit after them ("12%", "250 ms"): {field: unit};
    # the number is kept, the unit dropped.
    units: dict[str, str] = {}
    # Fields (after renaming) of true/false values, read as 1/0 (any case, or JSON booleans).
    booleans: list[str] = []
    # Nested objects become dotted fields ({"cpu": {"load": 1}} → "cpu.load"), before renaming, so their
    # values are bar statistics like any top-level field; lists are kept as they are.
    flatten: bool = False


def flattened(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with nested objects as dotted fields; a field already named so at the top wins.

    >>> flattened({"t": 1, "cpu": {"load": 0.5, "core": {"0": 2}}, "tags": [{"a": 1}], "cpu.load": 9, "e": {}})
    {'t': 1, 'tags': [{'a': 1}], 'cpu.load': 9, 'e': {}, 'cpu.core.0': 2}
    """
    flat: dict[str, Any] = {}
    # A queue (breadth first, as the dotted names are ordered): popping a list's head is linear in its length.
    nested: deque[tuple[str, Mapping[str, Any]]] = deque()
    for key, value in record.items():
        if isinstance(value, Mapping) and value:
            nested.append((str(key), value))
        else:
            flat[key] = value
    while nested:  # a loop, not recursion: a record may be nested up to MAX_NESTING levels
        prefix, value = nested.popleft()
        for key, inner in value.items():
            name = f"{prefix}.{key}"
            if isinstance(inner, Mapping) and inner:
                nested.append((name, inner))
            else:
                flat.setdefault(name, inner)
    return flat


RecordParser = Callable[[Mapping[str, Any], str], ParsedRecord]
ParserFactory = Callable[[GenericOptions, str], RecordParser]
# Parser factories by the `parser` a source names in sources.yaml.
PARSERS: Registry[ParserFactory] = Registry("parser")
register_parser = PARSERS.register


@register_parser("generic")
def generic_parser(options: GenericOptions, source: str) -> RecordParser:
    def parse(record: Mapping[str, Any], raw_checksum: str) -> ParsedRecord:
        payload = {options.rename.get(k, k): v for k, v in (flattened(record) if options.flatten else record).items()}
        for name, separator in options.thousands.items():
            value = payload.get(name)
            number = grouped_number(value, separator) if isinstance(value, str) else None
            if number is not None:
                payload[name] = number
        for name in options.decimal_comma:
            value = payload.get(name)
            number = decimal_comma_number(value) if isinstance(value, str) else None
            if number is not None:
                payload[name] = number
        for name, unit in options.units.items():
            value = payload.get(name)
            with_unit = unit_number(value, unit) if isinstance(value, str) else None
            if with_unit is not None and math.isfinite(with_unit[0]):
                payload[name] = with_unit[0]
        for name in options.booleans:
            value = payload.get(name)
            truth = str(value).strip().lower() if isinstance(value, str | bool) else None
            if truth in ("true", "false"):
                payload[name] = int(truth == "true")
        missing = [f for f in options.required if payload.get(f) in (None, "")]
        if missing:
            raise ParseError(f"record lacks required field(s): {', '.join(missing)}")
        if options.time_field not in payload:
            raise ParseError(f"record has no time field {options.time_field!r}")
        value = payload[options.time_field]
        if options.time_of_day_field:
            if payload.get(options.time_of_day_field) in (None, ""):
                raise ParseError(f"record has no time of day field {options.time_of_day_field!r}")
            value = f"{value} {payload[options.time_of_day_field]}"
        timestamp = (parse_time_format(value, options.time_format) if options.time_format
                     else parse_time(value, options.time_unit))
        if options.id_field:
            if payload.get(options.id_field) in (None, ""):
                raise ParseError(f"record has no id field {options.id_field!r}")
            event_id = f"{source}:{payload[options.id_field]}"
        else:
            event_id = stable_id(source, raw_checksum)
        return ParsedRecord(event_id, options.event_type, timestamp, payload)

    return parse


def _binance(kind: str, id_key: str, time_key: str) -> ParserFactory:
    """Binance stream payloads: symbol `s`, exchange id in `id_key`, time in `time_key` (ms)."""

    def build(options: GenericOptions, source: str) -> RecordParser:
        def parse(record: Mapping[str, Any], raw_checksum: str) -> ParsedRecord:
            data = record.get("data", record)  # combined streams wrap the payload
            if not isinstance(data, Mapping):
                raise ParseError("binance message has no object payload")
            for key in ("s", id_key, time_key):
                if data.get(key) in (None, ""):
                    raise ParseError(f"binance {kind} message lacks field {key!r}")
            timestamp = parse_time(data[time_key], "ms")
            return ParsedRecord(f"{source}:{data['s']}:{data[id_key]}", kind, timestamp, dict(data))

        return parse

    return build


PARSERS.add("binance_trade", _binance("trade", "t", "T"))
PARSERS.add("binance_aggtrade", _binance("aggTrade", "a", "T"))


def build_parser(name: str, options: GenericOptions, source: str) -> RecordParser:
    try:
        factory = PARSERS[name]
    except UnknownName as exc:
        raise ValueError(str(exc)) from None
    return factory(options, source)
