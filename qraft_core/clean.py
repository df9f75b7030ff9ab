"""The universal cleaning step: raw events of one window become clean events.

Per event: the payload must be a JSON object; configured numeric fields must
hold positive finite numbers (numeric strings are converted); the event time
must not lie more than `max_future_s` after the ingest time nor be older than
`max_age_days`. An event whose clock ran ahead of ingest within that bound is
kept and flagged `repaired`. Everything rejected goes to `dead_letters` (stage
"clean") with the reason, so a window's raw rows are always accounted for:
raw = clean + dead-lettered.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from qraft_core.config import CleanConfig
from qraft_core.events import stable_id
from qraft_core.store.base import EventStore, Filter

CLEAN_STAGE = "clean"


@dataclass(frozen=True)
class CleanResult:
    windows: int
    raw: int
    clean: int
    dead_lettered: int
    repaired: int
    by_source: dict[str, int]

    def as_metadata(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "raw_events": self.raw,
            "clean_events": self.clean,
            "dead_lettered": self.dead_lettered,
            "repaired": self.repaired,
            "by_source": self.by_source,
        }


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def check_event(
    payload_text: str, event_type: str, timestamp: datetime, ingest_time: datetime, config: CleanConfig
) -> tuple[str | None, str, bool]:
    """(reason to reject or None, cleaned payload JSON, repaired?).

    >>> ts = datetime(2026, 1, 5, tzinfo=UTC)
    >>> check_event('{"p": "1.5", "q": "2"}', "trade", ts, ts, CleanConfig())
    (None, '{"p":1.5,"q":2.0}', False)
    >>> check_event('{"p": "abc", "q": "2"}', "trade", ts, ts, CleanConfig())[0]
    "payload.p: expected a positive number, got 'abc'"
    """
    try:
        payload = json.loads(payload_text)
    except ValueError:
        return "payload is not valid JSON", payload_text, False
    if not isinstance(payload, dict):
        return "payload is not a JSON object", payload_text, False
    for name in config.numeric_fields.get(event_type, ()):
        number = _number(payload.get(name))
        if number is None:
            return f"payload.{name}: expected a positive number, got {payload.get(name)!r}", payload_text, False
        payload[name] = number
    ahead = (timestamp - ingest_time).total_seconds()
    if ahead > config.max_future_s:
        return (
            f"event time is {ahead:.0f}s after its ingest time (more than max_future_s={config.max_future_s})",
            payload_text,
            False,
        )
    if ingest_time - timestamp > timedelta(days=config.max_age_days):
        return f"event time is older than max_age_days={config.max_age_days}", payload_text, False
    return None, json.dumps(payload, separators=(",", ":"), sort_keys=True), ahead > 0


def clean_frame(raw: pl.DataFrame, window_start: datetime, config: CleanConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split the raw events of one window into clean rows and dead-letter rows."""
    clean: dict[str, list[Any]] = {k: [] for k in ("event_id", "source", "type", "timestamp", "ingest_time", "payload", "repaired")}
    dead: list[dict[str, Any]] = []
    received_at = datetime.now(UTC)
    for row in raw.iter_rows(named=True):
        reason, payload, repaired = check_event(row["payload"], row["type"], row["timestamp"], row["ingest_time"], config)
        if reason is not None:
            dead.append(
                {
                    "letter_id": stable_id(CLEAN_STAGE, row["event_id"]),
                    "stage": CLEAN_STAGE,
                    "source": row["source"],
                    "reason": reason,
                    "raw": row["payload"],
                    "event_id": row["event_id"],
                    "event_time": row["timestamp"],
                    "window_start": window_start,
                    "received_at": received_at,
                }
            )
            continue
        for key in ("event_id", "source", "type", "timestamp", "ingest_time"):
            clean[key].append(row[key])
        clean["payload"].append(payload)
        clean["repaired"].append(int(repaired))
    ms = pl.Datetime("ms", "UTC")
    clean_df = pl.DataFrame(clean, schema={
        "event_id": pl.Utf8, "source": pl.Utf8, "type": pl.Utf8, "timestamp": ms, "ingest_time": ms,
        "payload": pl.Utf8, "repaired": pl.UInt8,
    })
    clean_df = clean_df.with_columns(pl.lit(window_start).cast(ms).alias("window_start"))
    dead_df = pl.DataFrame(
        dead,
        schema={
            "letter_id": pl.Utf8, "stage": pl.Utf8, "source": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8,
            "event_id": pl.Utf8, "event_time": ms, "window_start": ms, "received_at": ms,
        },
    )
    return clean_df, dead_df


def clean_windows(
    store: EventStore, start: datetime, end: datetime, interval: timedelta, config: CleanConfig
) -> CleanResult:
    """Clean every window of [start, end); re-running a window replaces its rows (idempotent)."""
    clean_parts: list[pl.DataFrame] = []
    dead_parts: list[pl.DataFrame] = []
    raw_count = 0
    with store.session():
        raw = store.select("raw_events", start=start, end=end, order_by=("timestamp", "event_id"))
        raw_count = raw.height
        window_starts = raw["timestamp"].dt.truncate(f"{int(interval.total_seconds())}s")
        for (window_start,), rows in raw.with_columns(window_starts.alias("_window")).partition_by(
            "_window", as_dict=True, maintain_order=True
        ).items():
            clean_df, dead_df = clean_frame(rows.drop("_window"), window_start, config)
            clean_parts.append(clean_df)
            dead_parts.append(dead_df)
        empty_clean, empty_dead = clean_frame(raw.clear(), start, config)
        clean_all = pl.concat([empty_clean, *clean_parts])
        dead_all = pl.concat([empty_dead, *dead_parts])
        # One replace per run: a DELETE costs the same for one window as for sixty.
        store.replace_window("clean_events", start, end, clean_all)
        # dead_letters is keyed by window_start, so this replaces only this stage's letters.
        store.replace_window("dead_letters", start, end, dead_all, where=[Filter("stage", "=", CLEAN_STAGE)])
    by_source = {source: n for source, n in clean_all.group_by("source").len().iter_rows()}
    windows = -(-(end - start) // interval)
    return CleanResult(windows, raw_count, clean_all.height, dead_all.height,
                       int(clean_all["repaired"].sum() or 0), dict(sorted(by_source.items())))
