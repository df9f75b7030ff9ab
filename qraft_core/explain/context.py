"""The clean data around a pattern: the window a card summarises and a replay reproduces.

The window runs from `context_minutes` before the pattern to `context_minutes`
after it, widened to whole minutes so the replay command that reproduces the
finding covers exactly the data the card describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from pydantic import BaseModel

from qraft_core.config import ConfigError, config_dir
from qraft_core.events import PatternEvent, utc
from qraft_core.operators.aggregate import numeric_fields, numeric_value
from qraft_core.operators.pipeline import PreprocessingConfig, SourcePipeline, load_preprocessing
from qraft_core.registry import Registry
from qraft_core.store.base import EventStore, Filter

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}")
_NOT_WORD = re.compile(r"[^\w]+|_+")
_STREAM = "_context_stream"
# The generic summary shows this many fields of a stream.
MAX_FIELDS = 5


class ContextLine(BaseModel):
    """One line of a source's context: the phrase that words it and the values it shows."""

    phrase: str
    values: dict[str, float | int | str]
    # Sample texts (e.g. headlines), for readers of the context, not for the phrase.
    examples: list[str] = []


class SourceContext(BaseModel):
    source: str
    events: int
    before: int
    after: int
    types: dict[str, int]
    lines: list[ContextLine] = []


# (rows, focus terms) -> lines; focus: the terms the finding is about (a frequent itemset), or none.
ContextSummarise = Callable[[pl.DataFrame, Sequence[str]], list[ContextLine]]


@dataclass(frozen=True)
class ContextSummarizer:
    """Summarises the context rows of the event types it claims (rows sorted by time).

    Given focus terms, a summary's sample texts are those containing every term.
    """

    event_types: tuple[str, ...]
    summarise: ContextSummarise


CONTEXT_SUMMARIZERS: Registry[ContextSummarizer] = Registry("context summarizer")


def register_context_summarizer(
    name: str, event_types: tuple[str, ...]
) -> Callable[[ContextSummarise], ContextSummarise]:
    """Decorator: a plugin's summary of its event types; other types get the generic field summary."""

    def register(function: ContextSummarise) -> ContextSummarise:
        CONTEXT_SUMMARIZERS.add(name, ContextSummarizer(tuple(event_types), function))
        return function

    return register


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
    ...     window_start="2026-01-05T10:32:00Z", source_streams=["cpu"], details=PatternDetails(),
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
    """The sources behind a pattern's streams (a stream `hosts:web1` belongs to `hosts`)."""
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


def field_summaries(rows: pl.DataFrame, fields: list[str]) -> list[ContextLine]:
    """Count, range, first and last of each numeric field over the rows (at most MAX_FIELDS fields).

    >>> rows = pl.DataFrame({"payload": ['{"value": "-2"}', '{"value": 0}', '{"value": "x"}']})
    >>> [line.values for line in field_summaries(rows, ["value"])]
    [{'field': 'value', 'count': 2, 'min': -2.0, 'max': 0.0, 'first': -2.0, 'last': 0.0}]
    """
    lines = []
    for name in fields[:MAX_FIELDS]:
        values = rows.select(numeric_value(name).alias("v"))["v"].drop_nulls()
        if values.len() == 0:
            continue
        lines.append(ContextLine(phrase="context_field", values={
            "field": name, "count": values.len(), "min": float(values.min()),  # type: ignore[arg-type]
            "max": float(values.max()), "first": float(values[0]), "last": float(values[-1]),  # type: ignore[arg-type]
        }))
    return lines


def _generic_fields(rows: pl.DataFrame, pipeline: SourcePipeline | None) -> list[str]:
    """The fields the source's `stats` aggregate summarises, else every numeric payload field."""
    params = pipeline.aggregate_params() if pipeline is not None else {}
    if params.get("fields") is not None:
        return list(params["fields"])
    excluded = [*params.get("exclude", []), *params.get("categorical", [])]
    if pipeline is not None and pipeline.stream_key:
        excluded.append(pipeline.stream_key)
    return numeric_fields(rows, excluded)


def focus_terms(pattern: PatternEvent) -> list[str]:
    """The terms a finding is about: a frequent pattern's itemset, else none."""
    itemset = (pattern.details.model_extra or {}).get("itemset")
    return [str(term) for term in itemset] if isinstance(itemset, list) else []


def words_of(text: str) -> set[str]:
    """The lower-cased words of a text, split as `text_clean` splits it (on anything not a letter or digit).

    >>> sorted(words_of("BTC ETF: Approval (at last!)"))
    ['approval', 'at', 'btc', 'etf', 'last']
    """
    return set(_NOT_WORD.split(text.lower())) - {""}


def source_lines(
    rows: pl.DataFrame, pipeline: SourcePipeline | None, focus: Sequence[str] = ()
) -> list[ContextLine]:
    """Plugin summaries for the event types they claim, the generic field summary for the rest."""
    lines: list[ContextLine] = []
    claimed: set[str] = set()
    for summarizer in CONTEXT_SUMMARIZERS.values():
        own = rows.filter(pl.col("type").is_in(summarizer.event_types))
        claimed.update(summarizer.event_types)
        if own.height:
            lines += summarizer.summarise(own, focus)
    rest = rows.filter(~pl.col("type").is_in(sorted(claimed)))
    if rest.height:
        lines += field_summaries(rest, _generic_fields(rest, pipeline))
    return lines


class ContextRows:
    """The clean events behind many patterns' contexts, read once for all of them.

    Each row's stream is worked out once (a keyed stream's key is read from the JSON
    payload), not once per pattern whose window holds the row; a stream's summary lines
    are computed once per window and focus, however many patterns share them.
    """

    def __init__(self, frame: pl.DataFrame, preprocessing: PreprocessingConfig | None = None) -> None:
        self.frame = frame.sort(["timestamp", "event_id"], maintain_order=True) if frame.height else frame
        self.preprocessing = preprocessing or PreprocessingConfig()
        # The rows of a source with each row's stream, per source and the index of the pipeline
        # making its streams (-1: none).
        self._sources: dict[tuple[str, int], pl.DataFrame] = {}
        self._lines: dict[tuple[str, datetime, datetime, tuple[str, ...]], list[ContextLine]] = {}

    def stream(self, stream: str, source: str) -> tuple[pl.DataFrame, SourcePipeline | None]:
        """Every row of `stream` (time order) and the pipeline that makes it."""
        index, pipeline = next(
            ((i, p) for i, p in enumerate(self.preprocessing.pipeline_by_source) if p.owns_stream_name(stream)),
            (-1, None),
        )
        if (source, index) not in self._sources:
            rows = self.frame.filter(pl.col("source") == source) if self.frame.height else self.frame
            if rows.height and pipeline is not None:
                rows = rows.with_columns(pipeline.stream_expr().alias(_STREAM))
            self._sources[(source, index)] = rows
        rows = self._sources[(source, index)]
        if _STREAM in rows.columns:
            rows = rows.filter(pl.col(_STREAM) == stream).drop(_STREAM)
        return rows, pipeline

    def summarise(self, pattern: PatternEvent, start: datetime, end: datetime, minutes: int) -> ContextSummary:
        """Counts per stream of the pattern over [start, end) and a summary of its fields (no full rows)."""
        focus = tuple(focus_terms(pattern))
        summaries = []
        for stream, source in _context_streams(pattern):
            everything, pipeline = self.stream(stream, source)
            rows = (everything.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
                    if everything.height else everything)
            before = rows.filter(pl.col("timestamp") < pattern.timestamp).height if rows.height else 0
            types = (
                {str(k): int(n) for k, n in rows.group_by("type").len().sort("type").iter_rows()}
                if rows.height
                else {}
            )
            key = (stream, start, end, focus)
            if key not in self._lines:
                self._lines[key] = source_lines(rows, pipeline, focus) if rows.height else []
            summaries.append(
                SourceContext(source=stream, events=rows.height, before=before, after=rows.height - before,
                              types=types, lines=self._lines[key])
            )
        return ContextSummary(
            start=start,
            end=end,
            minutes=minutes,
            sources=summaries,
            replay_command=replay_command(start, end, pattern_sources(pattern)),
        )


def summarise_context(
    frame: pl.DataFrame,
    pattern: PatternEvent,
    start: datetime,
    end: datetime,
    minutes: int,
    preprocessing: PreprocessingConfig | None = None,
) -> ContextSummary:
    """Counts per stream of the clean events in `frame` within [start, end) and a summary of its fields.

    A stream split by a key (`source:key`) is summarised from its own events only,
    picked by the key its pipeline in `preprocessing` declares.
    """
    return ContextRows(frame, preprocessing).summarise(pattern, start, end, minutes)


def _context_streams(pattern: PatternEvent) -> list[tuple[str, str]]:
    """(stream, source) per distinct stream of the pattern, in name order."""
    found: dict[str, str] = {}
    for stream in sorted(pattern.source_streams):
        match = _SOURCE_NAME.match(stream)
        if match:
            found.setdefault(stream, match.group(0))
    return list(found.items())


def configured_preprocessing() -> PreprocessingConfig:
    """preprocessing.yaml of the configuration folder; without one, no stream keys are known."""
    try:
        return load_preprocessing(config_dir())
    except ConfigError:
        return PreprocessingConfig()


def load_context(
    store: EventStore, pattern: PatternEvent, minutes: int, preprocessing: PreprocessingConfig | None = None
) -> ContextSummary:
    """The summarised clean-data context of one pattern."""
    return load_contexts(store, [pattern], minutes, preprocessing)[0]


def load_contexts(
    store: EventStore,
    patterns: list[PatternEvent],
    minutes: int,
    preprocessing: PreprocessingConfig | None = None,
) -> list[ContextSummary]:
    """The contexts of many patterns from one read of the clean events they span.

    `preprocessing` (default: the configuration folder's) tells which events make up a keyed stream.
    """
    if not patterns:
        return []
    preprocessing = preprocessing or configured_preprocessing()
    windows = [context_window(pattern, minutes) for pattern in patterns]
    sources = sorted({s for pattern in patterns for s in pattern_sources(pattern)}) or [""]
    frame = store.select(
        "clean_events",
        start=min(start for start, _ in windows),
        end=max(end for _, end in windows),
        where=[Filter("source", "in", sources)],
        columns=["event_id", "source", "type", "timestamp", "payload"],
    )
    # Only rows some pattern's window holds (the read spans from the first window to the last).
    inside = pl.any_horizontal(
        (pl.col("timestamp") >= start) & (pl.col("timestamp") < end) for start, end in _merged(windows)
    )
    rows = ContextRows(frame.filter(inside) if frame.height else frame, preprocessing)
    return [rows.summarise(pattern, start, end, minutes) for pattern, (start, end) in zip(patterns, windows, strict=True)]


def _merged(windows: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The union of [start, end) windows as disjoint windows, in time order.

    >>> from datetime import UTC
    >>> at = [datetime(2026, 1, 5, h, tzinfo=UTC) for h in range(6)]
    >>> [(a.hour, b.hour) for a, b in _merged([(at[3], at[5]), (at[0], at[1]), (at[1], at[2]), (at[4], at[5])])]
    [(0, 2), (3, 5)]
    """
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def context_filters(pattern: PatternEvent) -> list[Filter]:
    """Clean events of the pattern's sources (an empty source list matches nothing)."""
    return [Filter("source", "in", pattern_sources(pattern) or [""])]
