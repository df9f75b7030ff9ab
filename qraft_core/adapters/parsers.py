"""Record parsers: one raw record (a dict) → the fields of a standard event.

A parser extracts the event time, a stable id and the payload; nothing else.
Parsers are chosen by name in `sources.yaml` (`parser:`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from qraft_core.events import stable_id

TimeUnit = Literal["auto", "s", "ms", "us", "ns", "iso"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    >>> parse_time("soon")
    Traceback (most recent call last):
    ...
    qraft_core.adapters.parsers.ParseError: timestamp 'soon' is neither an epoch number nor ISO 8601
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value is None or value == "":
        raise ParseError("timestamp is missing")
    number: float | None = None
    if isinstance(value, bool):
        raise ParseError(f"timestamp {value!r} is not a time")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and unit != "iso":
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None:
        if not math.isfinite(number) or number < 0:
            raise ParseError(f"timestamp {value!r} is not a valid epoch time")
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
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ParseError(f"timestamp {value!r} is neither an epoch number nor ISO 8601") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ParseError(f"timestamp {value!r} is not a time")


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
    event_type: str = "record"
    # Rename fields of the record before they become the payload: {from: to}.
    rename: dict[str, str] = {}
    # Fields every record must have (after renaming).
    required: list[str] = []


RecordParser = Callable[[Mapping[str, Any], str], ParsedRecord]


def generic_parser(options: GenericOptions, source: str) -> RecordParser:
    def parse(record: Mapping[str, Any], raw_checksum: str) -> ParsedRecord:
        payload = {options.rename.get(k, k): v for k, v in record.items()}
        missing = [f for f in options.required if payload.get(f) in (None, "")]
        if missing:
            raise ParseError(f"record lacks required field(s): {', '.join(missing)}")
        if options.time_field not in payload:
            raise ParseError(f"record has no time field {options.time_field!r}")
        timestamp = parse_time(payload[options.time_field], options.time_unit)
        if options.id_field:
            if payload.get(options.id_field) in (None, ""):
                raise ParseError(f"record has no id field {options.id_field!r}")
            event_id = f"{source}:{payload[options.id_field]}"
        else:
            event_id = stable_id(source, raw_checksum)
        return ParsedRecord(event_id, options.event_type, timestamp, payload)

    return parse


def _binance(kind: str, id_key: str, time_key: str) -> Callable[[GenericOptions, str], RecordParser]:
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


PARSERS: dict[str, Callable[[GenericOptions, str], RecordParser]] = {
    "generic": generic_parser,
    "binance_trade": _binance("trade", "t", "T"),
    "binance_aggtrade": _binance("aggTrade", "a", "T"),
}


def build_parser(name: str, options: GenericOptions, source: str) -> RecordParser:
    try:
        factory = PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown parser {name!r} (known: {', '.join(sorted(PARSERS))})") from None
    return factory(options, source)
