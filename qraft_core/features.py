"""Features: clean events → bars per stream, through the configured operator chains.

`materialize_features` computes the bars of a range of windows and replaces
them in the `features` table; `load_features` reads them back as one wide
frame, the input of the detectors. Trailing operators (normalize, `prev` in
derive) read the bars just before the range from the table, so a range gives
the same rows whether it is computed in one call or window by window.

The wide frame has `window_start`, `bar_time`, `stream`, `event_count`, one
Float64 column per feature (null where a stream does not have it) and
`items` (the bar's keywords, empty for numeric streams).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from qraft_core.events import iso, utc
from qraft_core.operators import (
    OperatorContext,
    PreprocessingConfig,
    failing_operator,
    run_pipeline,
)
from qraft_core.operators.base import BAR_TIME_DTYPE, TrailingOperator
from qraft_core.store.base import EventStore, Filter
from qraft_core.store.schema import spec

FEATURES_TABLE = "features"
BASE_COLUMNS = ("window_start", "bar_time", "stream", "event_count")
EVENT_COLUMNS = ["event_id", "source", "type", "timestamp", "payload"]

log = logging.getLogger(__name__)


def compute_bars(
    pipeline: PreprocessingConfig,
    events: pl.DataFrame,
    history: pl.DataFrame,
    dropped: dict[str, int] | None = None,
    failed: dict[str, str] | None = None,
) -> dict[str, pl.DataFrame]:
    """The bars of each configured source from its clean events.

    `history` is the wide features frame of the bars just before the events
    (what trailing operators read); `dropped` collects unusable events by reason.
    A source whose operators raise has no bars: `failed` gets why, by source, and
    the other sources go on (one source's plugin operator must not stop them all).
    """
    bars: dict[str, pl.DataFrame] = {}
    dropped = {} if dropped is None else dropped
    failed = {} if failed is None else failed
    for source_pipeline in pipeline.ordered():
        selected = pl.col("source") == source_pipeline.source
        if source_pipeline.event_type is not None:
            selected &= pl.col("type") == source_pipeline.event_type
        own_history = (
            history.filter(source_pipeline.owns_stream(pl.col("stream"))) if history.height else history
        )
        operators = [
            op.with_history(own_history) if isinstance(op, TrailingOperator) else op
            for op in source_pipeline.build()
        ]
        context = OperatorContext(
            source_pipeline.source, pipeline.bar_seconds_of(source_pipeline), bars=bars, dropped=dropped
        )
        source_events = events.filter(selected).sort("timestamp", "event_id")
        try:
            bars[source_pipeline.source] = run_pipeline(source_pipeline, operators, source_events, context)
        except Exception as exc:  # noqa: BLE001 - an operator (a plugin's too) may raise anything
            operator = failing_operator(exc)
            where = "its pipeline" if operator is None else f"operator {operator}"
            failed[source_pipeline.source] = f"{where}: {type(exc).__name__}: {exc}"
    return bars


def within_range(
    bars: dict[str, pl.DataFrame], start: datetime, end: datetime
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Each source's bars inside [start, end), and how many bars of each source were outside: written,
    they would lie where no run of this range replaces them (an operator that moved `bar_time`)."""
    inside: dict[str, pl.DataFrame] = {}
    outside: dict[str, int] = {}
    for source, frame in bars.items():
        if frame.height == 0:
            inside[source] = frame
            continue
        kept = frame.filter((pl.col("bar_time") >= start) & (pl.col("bar_time") < end))
        if kept.height < frame.height:
            outside[source] = frame.height - kept.height
        inside[source] = kept
    return inside, outside


def feature_rows(bars: dict[str, pl.DataFrame], start: datetime, interval: timedelta) -> pl.DataFrame:
    """Bars in the table's shape: parallel `names`/`values` arrays and `items`."""
    start_ms = int(utc(start).timestamp() * 1000)
    interval_ms = int(interval.total_seconds() * 1000)
    parts = []
    for frame in bars.values():
        if frame.height == 0:
            continue
        names = sorted(
            c for c, dtype in frame.schema.items() if c not in (*BASE_COLUMNS, "items") and dtype.is_numeric()
        )
        items = pl.col("items") if "items" in frame.columns else pl.lit([], dtype=pl.List(pl.Utf8))
        bar_ms = pl.col("bar_time").dt.epoch("ms")
        parts.append(
            frame.select(
                (pl.lit(start_ms) + (bar_ms - start_ms) // interval_ms * interval_ms)
                .cast(pl.Datetime("ms"))
                .dt.replace_time_zone("UTC")
                .alias("window_start"),
                pl.col("bar_time").cast(BAR_TIME_DTYPE),
                pl.col("stream"),
                pl.col("event_count").cast(pl.UInt32),
                pl.lit(names, dtype=pl.List(pl.Utf8)).alias("names"),
                pl.concat_list(pl.col(n).cast(pl.Float64).fill_null(float("nan")) for n in names).alias(
                    "values"
                ),
                items.cast(pl.List(pl.Utf8)).alias("items"),
            )
        )
    if not parts:
        return _empty_rows()
    return pl.concat(parts).sort("bar_time", "stream")


def _empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=spec(FEATURES_TABLE).frame_schema)


def _check_grid(pipeline: PreprocessingConfig, start: datetime, end: datetime, interval: timedelta) -> None:
    if end <= start:
        raise ValueError(f"empty range: end {end.isoformat()} is not after start {start.isoformat()}")
    for bar in sorted({pipeline.bar_seconds_of(p) for p in pipeline.pipeline_by_source} or {pipeline.bar_seconds}):
        if interval.total_seconds() % bar or interval.total_seconds() <= 0:
            raise ValueError(f"the window interval ({interval}) is not a multiple of bar_seconds ({bar})")
        if start.timestamp() % bar or end.timestamp() % bar:
            raise ValueError(f"start and end must fall on bar boundaries (multiples of {bar}s)")


def materialize_features(
    store: EventStore,
    pipeline: PreprocessingConfig,
    start: datetime,
    end: datetime,
    interval: timedelta,
) -> dict[str, Any]:
    """Compute the bars of the clean events in [start, end) and replace them in `features`.

    Idempotent: rerunning a range rewrites the same rows. Returns metadata:
    rows written, streams (names), windows, events read, events dropped as unusable,
    failed_sources (why each source whose operators raised has no bars) and
    bars_outside_range (bars of each source dated outside [start, end), not written).
    """
    start, end = utc(start), utc(end)
    _check_grid(pipeline, start, end, interval)
    sources = [p.source for p in pipeline.pipeline_by_source]
    lookback = timedelta(seconds=pipeline.lookback_seconds())
    dropped: dict[str, int] = {}
    with store.session():
        events = store.select(
            "clean_events",
            start=start,
            end=end,
            columns=EVENT_COLUMNS,
            where=[Filter("source", "in", sources)],
        )
        failed: dict[str, str] = {}
        outside: dict[str, int] = {}
        if events.height:
            history = load_features(store, start - lookback, start) if lookback else _wide(_empty_rows())
            bars, outside = within_range(compute_bars(pipeline, events, history, dropped, failed), start, end)
            rows = feature_rows(bars, start, interval)
        else:
            rows = _empty_rows()  # bars come from events; without any, the range has none to compute
        written = store.replace_window(FEATURES_TABLE, start, end, rows)
    span = f"[{iso(start)}, {iso(end)})"
    for source, reason in failed.items():
        log.error("features of source %s failed on windows %s: %s; it has no bars there, the other sources go on",
                  source, span, reason)
    for source, count in outside.items():
        log.warning("features of source %s: %d bar(s) dated outside windows %s were dropped (an operator "
                    "moved bar_time)", source, count, span)
    windows = -(-(end - start) // interval)
    return {
        "rows": written,
        "streams": sorted(rows["stream"].unique().to_list()),
        "windows": windows,
        "events": events.height,
        "dropped_events": sum(dropped.values()),
        "failed_sources": failed,
        "bars_outside_range": outside,
    }


def load_features(store: EventStore, start: datetime, end: datetime) -> pl.DataFrame:
    """The bars of [start, end) as a wide frame sorted by (bar_time, stream)."""
    rows = store.select(FEATURES_TABLE, start=utc(start), end=utc(end), order_by=("bar_time", "stream"))
    return _wide(rows)


def _wide(rows: pl.DataFrame) -> pl.DataFrame:
    rows = rows.with_columns(
        pl.col("window_start").cast(BAR_TIME_DTYPE),
        pl.col("bar_time").cast(BAR_TIME_DTYPE),
        pl.col("stream").cast(pl.Utf8),
        pl.col("event_count").cast(pl.UInt32),
        pl.col("items").cast(pl.List(pl.Utf8)),
    ).sort("bar_time", "stream")
    indexed = rows.with_row_index("_row")
    long = (
        indexed.select("_row", pl.col("names"), pl.col("values").cast(pl.List(pl.Float64)))
        .explode("names", "values")
        .filter(pl.col("names").is_not_null())
    )
    base = indexed.select("_row", *BASE_COLUMNS, "items")
    if long.height == 0:
        return base.drop("_row")
    wide = long.pivot(on="names", index="_row", values="values")
    names = sorted(c for c in wide.columns if c != "_row")
    return base.join(wide, on="_row", how="left").select(*BASE_COLUMNS, *names, "items")
