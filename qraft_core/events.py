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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


def utc(ts: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    """ISO 8601 with milliseconds and a Z suffix, the format of every event field.

    >>> iso(datetime(2026, 1, 5, 0, 0, 1, 123456, tzinfo=UTC))
    '2026-01-05T00:00:01.123Z'
    """
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc(ts).microsecond // 1000:03d}Z"


def _reject_non_finite(value: Any, path: str = "payload") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} holds a non-finite number ({value})")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{path}[{index}]")


class EventMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    parser_version: str = Field(min_length=1)
    raw_checksum: str = ""


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
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        _reject_non_finite(value)
        return value

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


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


def export_json_schemas(directory: Path) -> list[Path]:
    """Write the JSON Schemas of both event shapes; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in (StandardEvent, PatternEvent):
        path = directory / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
