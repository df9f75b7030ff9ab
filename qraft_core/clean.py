"""The universal cleaning step: raw events of one window become clean events.

Per event: the payload must be a JSON object; configured numeric fields must
hold positive finite numbers (numeric strings such as Binance's prices are
accepted; payloads are kept exactly as they landed); the event time
must not lie more than `max_future_s` after the ingest time nor be older than
`max_age_days`. An event whose clock ran ahead of ingest within that bound is
kept and flagged `repaired`. Everything rejected goes to `dead_letters` (stage
"clean") with the reason, so a window's raw rows are always accounted for:
raw = clean + dead-lettered.
"""

from __future__ import annotations

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
    # Seconds from event time to landing, worst case in the range: how late data arrives.
    max_lateness_s: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "raw_events": self.raw,
            "clean_events": self.clean,
            "dead_lettered": self.dead_lettered,
            "repaired": self.repaired,
            "by_source": self.by_source,
            "max_lateness_s": self.max_lateness_s,
        }


def _rejection(frame: pl.DataFrame, config: CleanConfig) -> pl.Expr:
    """Per row, the reason to reject it, or null to keep it (vectorized: one pass per rule)."""
    ahead_s = (pl.col("timestamp") - pl.col("ingest_time")).dt.total_milliseconds() / 1000
    rules: list[tuple[pl.Expr, pl.Expr]] = [
        (~pl.col("payload").str.strip_chars_start().str.starts_with("{"), pl.lit("payload is not a JSON object")),
    ]
    for event_type, names in config.numeric_fields.items():
        for name in names:
            text = pl.col("payload").str.json_path_match(f"$.{name}")
            number = text.cast(pl.Float64, strict=False)
            bad = (pl.col("type") == event_type) & (number.is_null() | ~number.is_finite() | (number <= 0))
            shown = text.fill_null("nothing")
            rules.append((bad, pl.lit(f"payload.{name}: expected a positive number, got ") + shown))
    rules.append((
        ahead_s > config.max_future_s,
        pl.lit("event time is ") + ahead_s.round(0).cast(pl.Int64).cast(pl.Utf8)
        + pl.lit(f"s after its ingest time (more than max_future_s={config.max_future_s})"),
    ))
    rules.append((
        (pl.col("ingest_time") - pl.col("timestamp")) > timedelta(days=config.max_age_days),
        pl.lit(f"event time is older than max_age_days={config.max_age_days}"),
    ))
    reason: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    for condition, text in reversed(rules):  # the first rule that applies gives the reason
        reason = pl.when(condition).then(text).otherwise(reason)
    return reason


def check_event(
    payload_text: str, event_type: str, timestamp: datetime, ingest_time: datetime, config: CleanConfig
) -> tuple[str | None, bool]:
    """(reason to reject or None, repaired?) for one event; the same rules as `clean_frame`.

    >>> ts = datetime(2026, 1, 5, tzinfo=UTC)
    >>> check_event('{"p": "1.5", "q": "2"}', "trade", ts, ts, CleanConfig())
    (None, False)
    >>> check_event('{"p": "abc", "q": "2"}', "trade", ts, ts, CleanConfig())[0]
    'payload.p: expected a positive number, got abc'
    """
    one = pl.DataFrame(
        {"payload": [payload_text], "type": [event_type], "timestamp": [timestamp], "ingest_time": [ingest_time]},
        schema_overrides={"timestamp": _MS, "ingest_time": _MS},
    )
    row = one.select(_rejection(one, config).alias("reason"), (pl.col("timestamp") > pl.col("ingest_time")).alias("r"))
    reason = row["reason"][0]
    return reason, reason is None and bool(row["r"][0])


_MS = pl.Datetime("ms", "UTC")
CLEAN_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8(), "source": pl.Utf8(), "type": pl.Utf8(), "timestamp": _MS, "ingest_time": _MS,
    "window_start": _MS, "payload": pl.Utf8(), "repaired": pl.UInt8(),
}


def clean_frame(
    raw: pl.DataFrame, interval: timedelta, config: CleanConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw events into clean rows and dead-letter rows; payloads are kept as they landed."""
    judged = raw.with_columns(
        _rejection(raw, config).alias("_reason"),
        pl.col("timestamp").dt.truncate(f"{int(interval.total_seconds())}s").alias("window_start"),
    )
    clean = judged.filter(pl.col("_reason").is_null()).select(
        "event_id", "source", "type", "timestamp", "ingest_time", "window_start", "payload",
        (pl.col("timestamp") > pl.col("ingest_time")).cast(pl.UInt8).alias("repaired"),
    )
    rejected = judged.filter(pl.col("_reason").is_not_null())
    dead = rejected.select(
        pl.Series("letter_id", [stable_id(CLEAN_STAGE, e) for e in rejected["event_id"]], dtype=pl.Utf8),
        pl.lit(CLEAN_STAGE).alias("stage"),
        "source",
        pl.col("_reason").alias("reason"),
        pl.col("payload").alias("raw"),
        "event_id",
        pl.col("timestamp").alias("event_time"),
        "window_start",
        pl.lit(datetime.now(UTC)).dt.cast_time_unit("ms").alias("received_at"),
    )
    return clean.cast(CLEAN_SCHEMA), dead  # type: ignore[arg-type]


def clean_windows(
    store: EventStore, start: datetime, end: datetime, interval: timedelta, config: CleanConfig
) -> CleanResult:
    """Clean every window of [start, end); re-running a window replaces its rows (idempotent)."""
    with store.session():
        raw = store.select("raw_events", start=start, end=end, order_by=("timestamp", "event_id"))
        clean_all, dead_all = clean_frame(raw, interval, config)
        # One replace per run: a DELETE costs the same for one window as for sixty.
        store.replace_window("clean_events", start, end, clean_all)
        # dead_letters is keyed by window_start, so this replaces only this stage's letters.
        store.replace_window("dead_letters", start, end, dead_all, where=[Filter("stage", "=", CLEAN_STAGE)])
    raw_count = raw.height
    lateness_ms = (raw["landed_at"] - raw["timestamp"]).dt.total_milliseconds().max() if raw_count else 0
    lateness = float(lateness_ms) if isinstance(lateness_ms, (int, float)) else 0.0
    by_source = {source: n for source, n in clean_all.group_by("source").len().iter_rows()}
    windows = -(-(end - start) // interval)
    return CleanResult(windows, raw_count, clean_all.height, dead_all.height,
                       int(clean_all["repaired"].sum() or 0), dict(sorted(by_source.items())),
                       round(lateness / 1000, 3))
