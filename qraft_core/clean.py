"""The universal cleaning step: raw events of one window become clean events.

Per event: the payload must be a JSON object; configured numeric fields must
hold finite numbers of any sign (numeric strings are accepted; payloads are
kept exactly as they landed); rules registered by plugins apply (the markets
plugin requires positive trade prices and quantities); the event time must not
lie more than `max_future_s` after the ingest time nor more than `max_age_days`
before its reference time. The reference is the ingest time, or the newest
event time landed for the source when that is earlier: a live source is judged
against the clock, a file or backfill of old data against the data itself, so
history of any age cleans while a stray 1970 timestamp in it does not. An event
whose clock ran ahead of ingest within the bound is kept and flagged `repaired`. Everything rejected goes to `dead_letters` (stage
"clean") with the reason, so a window's raw rows are always accounted for:
raw = clean + dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from qraft_core.config import CleanConfig
from qraft_core.events import stable_id
from qraft_core.payload import payload_field
from qraft_core.registry import Registry
from qraft_core.store.base import EventStore, Filter
from qraft_core.store.schema import spec

CLEAN_STAGE = "clean"
# (condition, reason) pairs over the raw columns `payload`, `type`, `timestamp`, `ingest_time`.
Rule = tuple[pl.Expr, pl.Expr]
CleanRule = Callable[[CleanConfig], list[Rule]]
# Plugins' own rejection rules by name, checked after the JSON-object check.
CLEAN_RULES: Registry[CleanRule] = Registry("clean rule")
register_clean_rule = CLEAN_RULES.register


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
    # Dead-lettered events per reason: why a window came out empty.
    rejected: Mapping[str, int] | None = None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "raw_events": self.raw,
            "clean_events": self.clean,
            "dead_lettered": self.dead_lettered,
            "repaired": self.repaired,
            "by_source": self.by_source,
            "max_lateness_s": self.max_lateness_s,
            "rejected": dict(self.rejected or {}),
        }


def _rejection(config: CleanConfig) -> pl.Expr:
    """Per row, the reason to reject it, or null to keep it (vectorized: one pass per rule).

    Rows carry `reference_time` (see the module docstring) besides the raw columns.
    """
    ahead_s = (pl.col("timestamp") - pl.col("ingest_time")).dt.total_milliseconds() / 1000
    rules: list[Rule] = [
        (~pl.col("payload").str.strip_chars_start().str.starts_with("{"), pl.lit("payload is not a JSON object")),
    ]
    for plugin_rule in CLEAN_RULES.values():
        rules += plugin_rule(config)
    for event_type, names in config.numeric_fields.items():
        for name in names:
            text = payload_field(name)
            number = text.cast(pl.Float64, strict=False)
            bad = (pl.col("type") == event_type) & (number.is_null() | ~number.is_finite())
            shown = text.fill_null("nothing")
            rules.append((bad, pl.lit(f"payload.{name}: expected a finite number, got ") + shown))
    rules.append((
        ahead_s > config.max_future_s,
        pl.lit("event time is ") + ahead_s.round(0).cast(pl.Int64).cast(pl.Utf8)
        + pl.lit(f"s after its ingest time (more than max_future_s={config.max_future_s})"),
    ))
    reference = pl.min_horizontal("ingest_time", "reference_time")
    rules.append((
        (reference - pl.col("timestamp")) > timedelta(days=config.max_age_days),
        pl.lit(f"event time is more than max_age_days={config.max_age_days} before ")
        + pl.when(pl.col("reference_time") < pl.col("ingest_time"))
        .then(pl.lit("the newest event of its source (") + pl.col("reference_time").dt.to_string("%Y-%m-%dT%H:%M:%SZ") + pl.lit(")"))
        .otherwise(pl.lit("its ingest time")),
    ))
    reason: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    for condition, text in reversed(rules):  # the first rule that applies gives the reason
        reason = pl.when(condition).then(text).otherwise(reason)
    return reason


def with_reference(raw: pl.DataFrame, newest: Mapping[str, datetime] | None = None) -> pl.DataFrame:
    """`reference_time` per row: the newest event time landed for its source (ingest time if unknown)."""
    if not newest:
        return raw.with_columns(pl.col("ingest_time").alias("reference_time"))
    known = pl.DataFrame(
        {"source": list(newest), "reference_time": list(newest.values())},
        schema={"source": pl.Utf8, "reference_time": _MS},
    )
    return raw.join(known, on="source", how="left").with_columns(
        pl.col("reference_time").fill_null(pl.col("ingest_time"))
    )


def check_event(
    payload_text: str, event_type: str, timestamp: datetime, ingest_time: datetime, config: CleanConfig
) -> tuple[str | None, bool]:
    """(reason to reject or None, repaired?) for one event; the same rules as `clean_frame`.

    >>> ts = datetime(2026, 1, 5, tzinfo=UTC)
    >>> check_event('{"p": "1.5", "q": "2"}', "trade", ts, ts, CleanConfig())
    (None, False)
    >>> check_event('{"p": "abc", "q": "2"}', "trade", ts, ts, CleanConfig())[0]
    'payload.p: expected a positive number, got abc'
    >>> check_event('{"value": "-3"}', "record", ts, ts, CleanConfig(numeric_fields={"record": ["value"]}))
    (None, False)
    """
    one = with_reference(pl.DataFrame(
        {"payload": [payload_text], "type": [event_type], "timestamp": [timestamp], "ingest_time": [ingest_time]},
        schema_overrides={"timestamp": _MS, "ingest_time": _MS},
    ))
    row = one.select(_rejection(config).alias("reason"), (pl.col("timestamp") > pl.col("ingest_time")).alias("r"))
    reason = row["reason"][0]
    return reason, reason is None and bool(row["r"][0])


_MS = pl.Datetime("ms", "UTC")
CLEAN_SCHEMA = spec("clean_events").frame_schema


def clean_frame(
    raw: pl.DataFrame, interval: timedelta, config: CleanConfig, newest: Mapping[str, datetime] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw events into clean rows and dead-letter rows; payloads are kept as they landed.

    `newest`: the newest landed event time per source (the age reference, see the module docstring).
    """
    # Lazily, so that polars reads each payload field once although the rules name it several times
    # (an eager frame evaluates every repetition: a JSON parse of every row each time).
    judged = with_reference(raw, newest).lazy().with_columns(
        _rejection(config).alias("_reason"),
        pl.col("timestamp").dt.truncate(f"{int(interval.total_seconds())}s").alias("window_start"),
    ).collect()
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
        clean_all, dead_all = clean_frame(raw, interval, config, newest_event_times(store, raw))
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
                       round(lateness / 1000, 3), rejection_counts(dead_all))


def rejection_counts(dead: pl.DataFrame) -> dict[str, int]:
    """Dead letters per reason, most frequent first (reasons quoting a value are grouped by their rule)."""
    if dead.height == 0:
        return {}
    rule = pl.col("reason").str.replace(r", got .*$", "").str.replace(r" \(\d{4}-.*\)$", "")
    counts = dead.group_by(rule.alias("reason")).len().sort(["len", "reason"], descending=[True, False])
    return dict(counts.iter_rows())


def newest_event_times(store: EventStore, raw: pl.DataFrame) -> dict[str, datetime]:
    """The newest event time landed so far for each source in `raw` (all windows, not only these).

    One grouped query for every source, not one query per source.
    """
    if raw.height == 0:
        return {}
    sources = set(raw["source"].unique().to_list())
    return {source: at for source, at in sorted(store.max_time("raw_events", "source").items()) if source in sources}
