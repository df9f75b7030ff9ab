"""The two record shapes everything in Qraft is built from.

`StandardEvent` is the seed's schema A: what an adapter publishes and what
lands in `raw_events`. `PatternEvent` is the seed's schema B: one finding of
the detectors, as stored in `pattern_events` and explained on a card.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta  # noqa: F401  (UTC: doctests)
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticSerializationError

# The time format of every event field; imported from here by most modules.
from qraft_core.timeutil import iso as iso
from qraft_core.timeutil import utc as utc

# Namespace for content-derived ids: the same content always gets the same id.
QRAFT_NAMESPACE = uuid.UUID("6f1c2a52-8c5e-4b8e-9a57-3f0d8c1e7a11")


def stable_id(*parts: object) -> str:
    """A UUID derived from content, so replays reproduce the same ids.

    >>> stable_id("binance_spot", 42) == stable_id("binance_spot", 42)
    True
    >>> stable_id("a", 1) != stable_id("a", 2)
    True
    """
    return str(uuid.uuid5(QRAFT_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def checksum(raw: bytes) -> str:
    """sha256 of the raw bytes an event was parsed from."""
    return hashlib.sha256(raw).hexdigest()


# What one record may hold. Deeper nesting is hostile or broken input (JSON parsers and
# serializers recurse, so depth is what crashes them); a record larger than this does not fit a
# bus message next to its neighbours. The lander's `max_payload_bytes` defaults to the same size.
MAX_NESTING = 64
MAX_RECORD_BYTES = 256 * 1024
# Python reads JSON integers of at most 4,300 digits; 4,000 digits is about 13,000 bits.
MAX_INT_BITS = 13_000
# How much of a rejected record a dead letter keeps.
MAX_DEAD_LETTER_RAW = 16 * 1024

DEAD_LETTER_KEY = "qraft_dead_letter"
_SORTED_JSON = msgspec.json.Encoder(order="sorted")

_SCALARS = (str, int, float, bool, type(None), datetime, date, time, timedelta, Decimal)


def safe_text(value: object, limit: int | None = None) -> str:
    """`value` as text that always encodes as UTF-8: lone surrogates become visible escapes.

    >>> safe_text("a\\ud800b")
    'a\\\\ud800b'
    >>> safe_text(b"caf\\xe9")
    'caf\\\\xe9'
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else _bounded_repr(value)
        if not text.isascii():
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None else text[:limit]


def _bounded_repr(value: object) -> str:
    try:
        return str(value)
    except (RecursionError, ValueError):  # a structure too deep to print, or an integer too long
        return f"<unprintable {type(value).__name__}>"


def _path(parent: str, key: object) -> str:
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{safe_text(key, 64)}"


def content_problem(value: object, path: str = "payload") -> str | None:
    """Why `value` cannot be part of an event, or None: nesting deeper than `MAX_NESTING`, text
    that is not valid Unicode (lone surrogates), non-finite numbers, non-text keys, binary or
    unknown values. Iterative, so no content can exhaust the stack.

    >>> content_problem({"a": [1, {"b": "x"}]}) is None
    True
    >>> content_problem({"a": float("nan")})
    'payload.a holds a non-finite number (nan)'
    >>> content_problem({"k": "\\udc80"})
    'payload.k holds text that is not valid Unicode (a lone surrogate)'
    >>> content_problem({"d": json.loads("[" * 100 + "]" * 100)})
    'payload.d[0][0][0][0][0][0][0][0][0][0][… is nested deeper than 64 levels'
    """
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"{where[:40]}… is nested deeper than {MAX_NESTING} levels"
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where} holds text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where} holds a non-finite number ({item})"
        elif isinstance(item, int):
            if item.bit_length() > MAX_INT_BITS:
                return f"{where} holds an integer of more than {MAX_INT_BITS} bits"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{where} has a key that is not text ({type(key).__name__})"
                stack.append((key, f"{where} key", depth + 1))
                stack.append((child, _path(where, key), depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, _path(where, index), depth + 1) for index, child in enumerate(item))
        elif isinstance(item, bytes):
            return f"{where} holds binary data ({len(item)} bytes)"
        elif not isinstance(item, _SCALARS):
            return f"{where} holds a {type(item).__name__}, which JSON cannot carry"
    return None


def dead_letter_envelope(reason: str, raw: bytes | str, source: str) -> bytes:
    """What an adapter publishes for a record it could not turn into an event (never raises).

    >>> dead_letter_envelope("bad", b"\\xff{", "s")
    b'{"qraft_dead_letter": {"reason": "bad", "raw": "\\\\\\\\xff{", "source": "s"}}'
    """
    envelope = {"reason": safe_text(reason, MAX_DEAD_LETTER_RAW), "raw": safe_text(raw, MAX_DEAD_LETTER_RAW),
                "source": safe_text(source, 64)}
    return json.dumps({DEAD_LETTER_KEY: envelope}).encode()


class EventMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    parser_version: str = Field(min_length=1)
    raw_checksum: str = ""
    # `live`: read as it happens, event times are judged against the ingest time at landing;
    # `backfill`: history (files), judged against the other events of its batch, never the clock.
    origin: Literal["live", "backfill"] = "live"

    @model_validator(mode="after")
    def _extras_encodable(self) -> EventMeta:
        problem = content_problem(self.model_extra or {}, "meta")
        if problem:
            raise ValueError(problem)
        return self


class StandardEvent(BaseModel):
    """One event from one source, as every adapter publishes it.

    >>> e = StandardEvent(event_id="t-1", source="binance_spot", type="trade",
    ...     timestamp="2026-01-05T00:00:00.123Z", ingest_time="2026-01-05T00:00:00.200Z",
    ...     payload={"p": "42000.5"}, meta={"parser_version": "binance-trade/1"})
    >>> e.timestamp.isoformat()
    '2026-01-05T00:00:00.123000+00:00'
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=256)
    source: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    type: str = Field(min_length=1, max_length=64)
    timestamp: datetime
    ingest_time: datetime
    payload: dict[str, Any]
    meta: EventMeta

    @field_validator("timestamp", "ingest_time")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc(value)

    @field_validator("payload")
    @classmethod
    def _encodable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = content_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def to_json_bytes(self) -> bytes:
        """One JSON line, keys sorted and compact as `json.dumps(..., sort_keys=True,
        separators=(",", ":"))` writes them: the lander stores a payload so written as it is sent
        (it checks that it is, `qraft_core.landing.compiled`), instead of decoding and writing it
        again. An event built without validation that cannot be encoded becomes a dead-letter
        envelope with the reason, so encoding never fails a whole batch.

        >>> StandardEvent(event_id="e", source="s", type="t", timestamp="2026-01-05T00:00:00Z",
        ...     ingest_time="2026-01-05T00:00:00.5Z", payload={"q": "0.1", "p": 7, "a": None},
        ...     meta={"parser_version": "v"}).to_json_bytes()
        b'{"event_id":"e","ingest_time":"2026-01-05T00:00:00.500000Z","meta":{"origin":"live","parser_version":"v","raw_checksum":""},"payload":{"a":null,"p":7,"q":"0.1"},"source":"s","timestamp":"2026-01-05T00:00:00Z","type":"t"}'

        >>> e = StandardEvent.model_construct(event_id="e\\ud800", source="s", type="t",
        ...     timestamp=datetime(2026, 1, 5, tzinfo=UTC), ingest_time=datetime(2026, 1, 5, tzinfo=UTC),
        ...     payload={}, meta=EventMeta(parser_version="v"))
        >>> json.loads(e.to_json_bytes())[DEAD_LETTER_KEY]["reason"][:30]
        'event cannot be encoded as JSO'
        """
        try:
            return _SORTED_JSON.encode(self.model_dump(mode="json"))
        except (PydanticSerializationError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            reason = f"event cannot be encoded as JSON: {safe_text(exc, 200)}"
            return dead_letter_envelope(reason, _bounded_repr(self.__dict__), self.source)


class PatternType(StrEnum):
    concept_drift = "concept_drift"
    anomaly = "anomaly"
    cluster_change = "cluster_change"
    freq_pattern = "freq_pattern"


class Contributor(BaseModel):
    field: str
    score: float


class AlgorithmInfo(BaseModel):
    name: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)


class PatternDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    prev_state: str = ""
    new_state: str = ""
    # Measured on clean data before vs after the finding, e.g. {"volatility": 0.37}
    # as a relative change; units are named in `metric_units`.
    metric_changes: dict[str, float] = Field(default_factory=dict)
    metric_units: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)


class PatternExplain(BaseModel):
    top_contributors: list[Contributor] = Field(default_factory=list)


class PatternEvent(BaseModel):
    """One finding, per the seed's schema B.

    `algorithms` lists every detector that reported it; more than one engine
    means the finding is cross-validated.
    """

    model_config = ConfigDict(extra="forbid")

    pattern_id: str
    type: PatternType
    timestamp: datetime
    window_start: datetime
    source_streams: list[str]
    details: PatternDetails
    explain: PatternExplain
    algorithm: AlgorithmInfo
    algorithms: list[AlgorithmInfo] = Field(default_factory=list)
    cross_validated: bool = False
    confidence: float = Field(ge=0.0, le=1.0)
    restart: bool = False

    @field_validator("timestamp", "window_start")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc(value)

    @property
    def engines(self) -> list[str]:
        """The engines whose detectors found this pattern (cross-validated: more than one).

        The pattern builder records them in `details.engines` (each detector's own engine); an
        event made by hand has the engine in its algorithms' names (`river.ADWIN`).
        """
        recorded = (self.details.model_extra or {}).get("engines")
        if recorded:
            return sorted(recorded)
        return sorted({a.name.split(".")[0] for a in self.algorithms or [self.algorithm]})


def export_json_schemas(directory: Path) -> list[Path]:
    """Write the JSON Schemas of both event shapes; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in (StandardEvent, PatternEvent):
        path = directory / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
