"""The clean data around a pattern: the window a card summarises and a replay reproduces.

The window runs from `context_minutes` before the pattern to `context_minutes`
after it, widened to whole minutes so the replay command that reproduces the
finding covers exactly the data the card describes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import polars as pl
from pydantic import BaseModel

from qraft_core.events import PatternEvent, utc
from qraft_core.store.base import EventStore, Filter

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}")
MAX_TITLES = 3
TRADE_TYPES = ("trade", "aggTrade")


class TradeSummary(BaseModel):
    count: int
    price_min: float
    price_max: float
    price_first: float
    price_last: float
    volume: float


class SourceContext(BaseModel):
    source: str
    events: int
    before: int
    after: int
    types: dict[str, int]
    trades: TradeSummary | None = None
    headlines: int | None = None
    headline_titles: list[str] = []


class ContextSummary(BaseModel):
    start: datetime
    end: datetime
    minutes: int
    sources: list[SourceContext]
    replay_command: str


def floor_minute(ts: datetime) -> datetime:
    return utc(ts).replace(second=0, microsecond=0)


def context_window(pattern: PatternEvent, minutes: int) -> tuple[datetime, datetime]:
    """[start, end) covering `minutes` either side of the pattern, on whole minutes.

    >>> from qraft_core.events import PatternDetails, PatternExplain, AlgorithmInfo
    >>> p = PatternEvent(pattern_id="p", type="anomaly", timestamp="2026-01-05T10:32:15Z",
    ...     window_start="2026-01-05T10:32:00Z", source_streams=["s"], details=PatternDetails(),
    ...     explain=PatternExplain(), algorithm=AlgorithmInfo(name="a", version="1"), confidence=0.5)
    >>> from qraft_core.events import iso
    >>> [iso(t) for t in context_window(p, 5)]
    ['2026-01-05T10:27:00.000Z', '2026-01-05T10:38:00.000Z']
    """
    start = floor_minute(pattern.timestamp - timedelta(minutes=minutes))
    after = pattern.timestamp + timedelta(minutes=minutes)
    end = floor_minute(after)
    return start, end if end == after else end + timedelta(minutes=1)


def pattern_sources(pattern: PatternEvent) -> list[str]:
    """The sources behind a pattern's streams (a stream `binance_spot.price` belongs to `binance_spot`)."""
    found = [m.group(0) for m in (_SOURCE_NAME.match(s) for s in pattern.source_streams) if m]
    return sorted(set(found))


def replay_command(start: datetime, end: datetime, sources: list[str]) -> str:
    """The command that replays [start, end) of the given sources.

    >>> from datetime import UTC
    >>> start, end = datetime(2026, 1, 5, 10, 27, tzinfo=UTC), datetime(2026, 1, 5, 10, 38, tzinfo=UTC)
    >>> replay_command(start, end, ["a"])
    'qraft replay --start 2026-01-05T10:27:00Z --end 2026-01-05T10:38:00Z --source a'
    """

    def minute(ts: datetime) -> str:
        return utc(ts).strftime("%Y-%m-%dT%H:%M:00Z")

    flags = "".join(f" --source {source}" for source in sources)
    return f"qraft replay --start {minute(start)} --end {minute(end)}{flags}"


def _payload_field(*names: str) -> pl.Expr:
    return pl.coalesce([pl.col("payload").str.json_path_match(f"$.{name}") for name in names])


def summarise_context(
    frame: pl.DataFrame, pattern: PatternEvent, start: datetime, end: datetime, minutes: int
) -> ContextSummary:
    """Counts per source, price range and volume of trades, headline counts (no full rows)."""
    sources = pattern_sources(pattern)
    summaries = []
    frame = frame.sort(["timestamp", "event_id"]) if frame.height else frame
    for source, label, symbol in _context_streams(pattern):
        rows = frame.filter(pl.col("source") == source) if frame.height else frame
        if symbol and rows.height:
            # One instrument of a multi-symbol source: its trades only, not its neighbours' prices.
            rows = rows.filter(_payload_field("s") == symbol)
        before = rows.filter(pl.col("timestamp") < pattern.timestamp).height if rows.height else 0
        titles = _titles(rows)
        types = (
            {str(k): int(n) for k, n in rows.group_by("type").len().sort("type").iter_rows()}
            if rows.height
            else {}
        )
        summaries.append(
            SourceContext(
                source=label,
                events=rows.height,
                before=before,
                after=rows.height - before,
                types=types,
                trades=_trades(rows),
                headlines=titles.len() if titles.len() else None,
                headline_titles=titles.head(MAX_TITLES).to_list(),
            )
        )
    return ContextSummary(
        start=start,
        end=end,
        minutes=minutes,
        sources=summaries,
        replay_command=replay_command(start, end, sources),
    )


def _context_streams(pattern: PatternEvent) -> list[tuple[str, str, str]]:
    """(source, label, symbol) per stream; `binance_spot:BTCUSDT` is symbol BTCUSDT of binance_spot.

    Streams without a symbol summarise their whole source, once.
    """
    found: dict[str, tuple[str, str, str]] = {}
    for stream in sorted(pattern.source_streams):
        match = _SOURCE_NAME.match(stream)
        if not match:
            continue
        source = match.group(0)
        symbol = stream[len(source) + 1 :] if stream[len(source) : len(source) + 1] == ":" else ""
        label = stream if symbol else source
        found.setdefault(label, (source, label, symbol))
    return list(found.values())


def _trades(rows: pl.DataFrame) -> TradeSummary | None:
    if rows.height == 0:
        return None
    trades = (
        rows.filter(pl.col("type").is_in(TRADE_TYPES))
        .select(
            _payload_field("p", "price").cast(pl.Float64, strict=False).alias("price"),
            _payload_field("q", "qty", "quantity").cast(pl.Float64, strict=False).alias("qty"),
        )
        .drop_nulls("price")
    )
    if trades.height == 0:
        return None
    prices = trades["price"]
    return TradeSummary(
        count=trades.height,
        price_min=float(prices.min()),  # type: ignore[arg-type]
        price_max=float(prices.max()),  # type: ignore[arg-type]
        price_first=float(prices[0]),
        price_last=float(prices[-1]),
        # Rounded so float summation noise never shows up on a card.
        volume=round(float(trades["qty"].fill_null(0.0).sum()), 8),
    )


def _titles(rows: pl.DataFrame) -> pl.Series:
    if rows.height == 0:
        return pl.Series("title", [], dtype=pl.Utf8)
    return rows.select(_payload_field("headline", "title").alias("title")).drop_nulls("title")["title"]


def load_context(store: EventStore, pattern: PatternEvent, minutes: int) -> ContextSummary:
    """The summarised clean-data context of one pattern."""
    return load_contexts(store, [pattern], minutes)[0]


def load_contexts(store: EventStore, patterns: list[PatternEvent], minutes: int) -> list[ContextSummary]:
    """The contexts of many patterns from one read of the clean events they span."""
    if not patterns:
        return []
    windows = [context_window(pattern, minutes) for pattern in patterns]
    sources = sorted({s for pattern in patterns for s in pattern_sources(pattern)}) or [""]
    frame = store.select(
        "clean_events",
        start=min(start for start, _ in windows),
        end=max(end for _, end in windows),
        where=[Filter("source", "in", sources)],
        columns=["event_id", "source", "type", "timestamp", "payload"],
    )
    contexts = []
    for pattern, (start, end) in zip(patterns, windows, strict=True):
        rows = frame.filter(
            (pl.col("timestamp") >= start) & (pl.col("timestamp") < end)
            & pl.col("source").is_in(pattern_sources(pattern))
        )
        contexts.append(summarise_context(rows, pattern, start, end, minutes))
    return contexts


def context_filters(pattern: PatternEvent) -> list[Filter]:
    """Clean events of the pattern's sources (an empty source list matches nothing)."""
    return [Filter("source", "in", pattern_sources(pattern) or [""])]
