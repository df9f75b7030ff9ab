"""Finding, paging and exporting pattern events (shared by the REST API and the CLI).

Pages are keyset pages on (time, id): a cursor names the last row seen, so
rows inserted while someone pages never shift or repeat what they get.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
from pydantic import ValidationError

from qraft_core.events import PatternEvent, PatternType, iso, utc
from qraft_core.store.base import STORE_TIME_RANGE, EventStore, Filter

log = logging.getLogger(__name__)

EXPORT_COLUMNS = (
    "pattern_id",
    "type",
    "timestamp",
    "window_start",
    "source_streams",
    "confidence",
    "cross_validated",
    "algorithm",
    "algorithm_version",
    "algorithms",
    "prev_state",
    "new_state",
    "metric_changes",
    "metric_units",
    "metrics",
    "top_contributors",
    "restart",
)


class QueryError(ValueError):
    """A query parameter is malformed or out of bounds; the message names it."""


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 time (naive means UTC); QueryError names the parameter.

    >>> iso(parse_time("2026-01-05T10:00:00Z", "start")), iso(parse_time("1950-03-01", "since"))
    ('2026-01-05T10:00:00.000Z', '1950-03-01T00:00:00.000Z')
    >>> parse_time("1899-12-31", "since")
    Traceback (most recent call last):
    ...
    qraft_core.explain.catalog.QueryError: since: '1899-12-31' is outside the years 1900-2299 the store holds
    >>> parse_time("yesterday", "start")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qraft_core.explain.catalog.QueryError: start: 'yesterday' is not an ISO 8601 time (e.g. 2026-01-05T10:0...
    """
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}: {value!r} is not an ISO 8601 time (e.g. 2026-01-05T10:00:00Z)") from None
    low, high = STORE_TIME_RANGE
    if not low.year <= parsed.year <= high.year:
        raise QueryError(f"{name}: {value!r} is outside the years {low.year}-{high.year} the store holds")
    return utc(parsed)


def parse_type(value: str | None) -> PatternType | None:
    if value is None:
        return None
    try:
        return PatternType(value)
    except ValueError:
        raise QueryError(f"type: {value!r} is not a pattern type (one of {', '.join(PatternType)})") from None


def check_range(start: datetime, end: datetime, max_days: int) -> None:
    if end <= start:
        raise QueryError(f"end ({iso(end)}) must be after start ({iso(start)})")
    if end - start > timedelta(days=max_days):
        raise QueryError(f"the range {iso(start)} to {iso(end)} is longer than the limit of {max_days} days")


def resolve_range(
    store: EventStore, start: datetime | None, end: datetime | None, max_days: int | None
) -> tuple[datetime, datetime]:
    """Fill a missing bound with the longest allowed range; with neither, end at the newest pattern.

    `max_days` None means no limit (exports page through any span): a missing bound
    becomes the oldest or newest stored pattern window.
    """
    if max_days is None:
        stored = store.extent("pattern_events", "window_start")
        now = datetime.now(UTC)
        oldest, newest = (utc(stored[0]), utc(stored[1])) if stored else (now, now)
        start = start or oldest
        end = end or max(newest + timedelta(milliseconds=1), start + timedelta(milliseconds=1))
        if end <= start:
            raise QueryError(f"end ({iso(end)}) must be after start ({iso(start)})")
        return start, end
    span = timedelta(days=max_days)
    if start is None and end is None:
        # No patterns yet: the span up to now, which is empty but reads naturally.
        newest = max(store.max_time("pattern_events", "type").values(), default=datetime.now(UTC))
        end = newest + timedelta(milliseconds=1)
    if start is None:
        assert end is not None
        start = end - span
    if end is None:
        end = start + span
    check_range(start, end, max_days)
    return start, end


@dataclass(frozen=True)
class PatternQuery:
    start: datetime
    end: datetime
    type: PatternType | None = None
    source: str | None = None
    min_confidence: float | None = None

    def filters(self) -> list[Filter]:
        where = []
        if self.type is not None:
            where.append(Filter("type", "=", self.type.value))
        if self.source is not None:
            where.append(Filter("source_streams", "has", self.source))
        if self.min_confidence is not None:
            where.append(Filter("confidence", ">=", float(self.min_confidence)))
        return where


def encode_cursor(ts: datetime, row_id: str) -> str:
    """An opaque cursor naming the last row of a page.

    >>> c = encode_cursor(datetime(2026, 1, 5, tzinfo=UTC), "p-1")
    >>> decode_cursor(c)[1]
    'p-1'
    """
    return base64.urlsafe_b64encode(json.dumps([iso(ts), row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts_text, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(row_id, str):
            raise TypeError
        return parse_time(ts_text, "cursor"), row_id
    except (ValueError, TypeError, UnicodeError):
        raise QueryError("cursor: not a cursor this API issued (pass next_cursor back unchanged)") from None


def keyset_page(
    store: EventStore,
    table: str,
    *,
    time_column: str,
    id_column: str,
    start: datetime,
    end: datetime,
    where: Sequence[Filter],
    limit: int,
    cursor: str | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, str | None]:
    """Up to `limit` rows after `cursor` in (time, id) order, and the cursor of the next page."""

    def rows(extra: list[Filter], count: int) -> pl.DataFrame:
        return store.select(
            table,
            start=start,
            end=end,
            where=[*where, *extra],
            columns=columns,
            order_by=(time_column, id_column),
            limit=count,
        )

    if cursor is None:
        frame = rows([], limit + 1)
    else:
        last_ts, last_id = decode_cursor(cursor)
        # (ts, id) > (last_ts, last_id) is two AND-only queries: the rest of last_ts, then later times.
        same = rows([Filter(time_column, "=", last_ts), Filter(id_column, ">", last_id)], limit + 1)
        later = rows([Filter(time_column, ">", last_ts)], limit + 1 - same.height)
        frame = pl.concat([same, later]) if same.height else later
    if frame.height <= limit:
        return frame, None
    frame = frame.head(limit)
    return frame, encode_cursor(frame[time_column][-1], frame[id_column][-1])


def patterns_page(
    store: EventStore, query: PatternQuery, limit: int, cursor: str | None = None
) -> tuple[list[PatternEvent], str | None]:
    frame, next_cursor = keyset_page(
        store,
        "pattern_events",
        time_column="window_start",
        id_column="pattern_id",
        start=query.start,
        end=query.end,
        where=query.filters(),
        limit=limit,
        cursor=cursor,
        columns=["window_start", "pattern_id", "body"],
    )
    patterns = []
    for pattern_id, body in frame.select("pattern_id", "body").iter_rows():
        try:
            patterns.append(PatternEvent.model_validate_json(body))
        except ValidationError as exc:
            # One row the current model cannot read (written by a faulty detector or an older
            # version) must not hide the rest of the page.
            first = exc.errors()[0]
            log.warning("pattern %s is skipped: its stored body does not read as a pattern event (%s: %s)",
                        pattern_id, ".".join(map(str, first["loc"])), first["msg"])
    return patterns, next_cursor


def iter_patterns(
    store: EventStore, query: PatternQuery, page_size: int = 1000
) -> Iterator[list[PatternEvent]]:
    """Every matching pattern, page by page."""
    cursor: str | None = None
    while True:
        page, cursor = patterns_page(store, query, page_size, cursor)
        if page:
            yield page
        if cursor is None:
            return


def load_pattern(store: EventStore, pattern_id: str) -> PatternEvent | None:
    frame = store.select(
        "pattern_events", where=[Filter("pattern_id", "=", pattern_id)], columns=["body"], limit=1
    )
    return PatternEvent.model_validate_json(frame["body"][0]) if frame.height else None


def export_row(pattern: PatternEvent) -> dict[str, object]:
    """One pattern as a flat row (nested fields as JSON text), for CSV."""

    def as_json(value: object) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    return {
        "pattern_id": pattern.pattern_id,
        "type": pattern.type.value,
        "timestamp": iso(pattern.timestamp),
        "window_start": iso(pattern.window_start),
        "source_streams": ";".join(pattern.source_streams),
        "confidence": pattern.confidence,
        "cross_validated": int(pattern.cross_validated),
        "algorithm": pattern.algorithm.name,
        "algorithm_version": pattern.algorithm.version,
        "algorithms": ";".join(f"{a.name}@{a.version}" for a in pattern.algorithms),
        "prev_state": pattern.details.prev_state,
        "new_state": pattern.details.new_state,
        "metric_changes": as_json(pattern.details.metric_changes),
        "metric_units": as_json(pattern.details.metric_units),
        "metrics": as_json(pattern.details.metrics),
        "top_contributors": as_json([c.model_dump() for c in pattern.explain.top_contributors]),
        "restart": int(pattern.restart),
    }


def export_chunks(pages: Iterator[list[PatternEvent]], fmt: str) -> Iterator[str]:
    """The export as text chunks: CSV with a header, or one JSON array of pattern events."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for page in pages:
            for pattern in page:
                writer.writerow(export_row(pattern))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()
        return
    if fmt != "json":
        raise QueryError(f"format: {fmt!r} is not an export format (csv or json)")
    separator = "[\n"
    for page in pages:
        for pattern in page:
            yield separator + pattern.model_dump_json()
            separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"
