"""Pattern events for people: list, show as a card, annotate, export."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from qraft_core.annotations import (
    Annotation,
    Label,
    UnknownPattern,
    add_annotation,
    detector_stats,
    list_annotations,
)
from qraft_core.config import QraftConfig
from qraft_core.events import PatternEvent, PatternType, iso
from qraft_core.explain.cards import Card, Mode
from qraft_core.explain.catalog import (
    PatternQuery,
    export_chunks,
    iter_patterns,
    keyset_page,
    load_pattern,
    patterns_page,
    resolve_range,
)
from qraft_core.explain.context import context_filters, context_window
from qraft_core.explain.llm import LlmClient
from qraft_core.explain.materialize import explain_pattern
from qraft_core.explain.templates import CardsConfig, load_cards_config
from qraft_core.operators.stream_names import CONTROL_CHARACTERS
from qraft_core.store.base import EventStore, Filter

ExportFormat = Literal["csv", "json"]
# Control characters in an id, a filter or an author (`CONTROL_CHARACTERS`, the stream-name rule's):
# refused, as they would split a log or card line into forged ones. A note may span lines (tab, line
# feed, carriage return), nothing else.
NOTE_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTEXT_COLUMNS = ["event_id", "source", "type", "timestamp", "payload"]


@dataclass(frozen=True)
class StreamOrSourceQuery(PatternQuery):
    """`source` names a stream (`binance_spot:BTCUSDT`) or a source, meaning all of its streams."""

    def filters(self) -> list[Filter]:
        return [
            Filter(f.column, "has_source", f.value) if f.column == "source_streams" else f
            for f in super().filters()
        ]


@dataclass(frozen=True)
class ContextPage:
    """A keyset page of the clean rows in a pattern's context window (timestamps as ISO text)."""

    start: datetime
    end: datetime
    rows: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "count": len(self.rows), "rows": self.rows,
                "next_cursor": self.next_cursor}


@dataclass
class PatternService:
    store: EventStore
    config: QraftConfig
    config_path: Path
    llm: LlmClient | None = None  # None: the one explain.llm configures

    def query(self, type_: str | None = None, since: datetime | None = None, until: datetime | None = None,
              source: str | None = None, min_confidence: float | None = None, capped: bool = True) -> PatternQuery:
        """The query of these filters (`source`: a source, meaning all of its streams, or one stream);
        `capped`: spans at most api.max_range_days (listings, not exports). QueryError for a range it refuses."""
        start, end = resolve_range(self.store, since, until, self.config.api.max_range_days if capped else None)
        return StreamOrSourceQuery(start, end, PatternType(type_) if type_ else None, source, min_confidence)

    @cached_property
    def cards(self) -> CardsConfig:
        """The card templates, read once (ConfigError for a broken cards.yaml)."""
        return load_cards_config(self.config_path)

    def page(self, query: PatternQuery, limit: int, cursor: str | None = None) -> tuple[list[PatternEvent], str | None]:
        """Up to `limit` pattern events after `cursor`, in (window_start, pattern_id) order, and the
        cursor of the next page (None after the last)."""
        return patterns_page(self.store, query, limit, cursor)

    def list(self, query: PatternQuery, limit: int) -> list[PatternEvent]:
        """The first `limit` pattern events of the query, in time order."""
        page, _ = self.page(query, limit)
        return page

    def get(self, pattern_id: str) -> PatternEvent:
        pattern = load_pattern(self.store, pattern_id)
        if pattern is None:
            raise UnknownPattern(f"no pattern with id {pattern_id!r}")
        return pattern

    def show(self, pattern_id: str, mode: Mode = "human", lang: str | None = None) -> Card:
        """The explanation card of one pattern (UnknownPattern when there is none)."""
        return self.card(self.get(pattern_id), mode, lang)

    def card(self, pattern: PatternEvent, mode: Mode = "human", lang: str | None = None) -> Card:
        """The explanation card of a loaded pattern, in `lang` (default: explain.language)."""
        language = lang or self.config.explain.language
        return explain_pattern(self.store, self.config, self.cards, pattern, language, mode, self.llm)

    def context(self, pattern_id: str, limit: int, cursor: str | None = None) -> ContextPage:
        """The clean rows around a pattern (explain.context_minutes either side of its window), up to
        `limit` after `cursor` in (timestamp, event_id) order; UnknownPattern when there is none."""
        pattern = self.get(pattern_id)
        start, end = context_window(pattern, self.config.explain.context_minutes)
        frame, next_cursor = keyset_page(
            self.store, "clean_events", time_column="timestamp", id_column="event_id", start=start, end=end,
            where=context_filters(pattern), limit=limit, cursor=cursor, columns=CONTEXT_COLUMNS,
        )
        rows = [{**row, "timestamp": iso(row["timestamp"])} for row in frame.iter_rows(named=True)]
        return ContextPage(start, end, rows, next_cursor)

    def annotations(self, pattern_id: str) -> Sequence[Annotation]:
        """A pattern's annotations, oldest first (UnknownPattern when there is no such pattern)."""
        self.get(pattern_id)
        return list_annotations(self.store, [pattern_id])

    def annotation_stats(self) -> dict[str, dict[str, float | int | None]]:
        """Per detector: confirmed findings, false alarms, notes and precision over verdicts."""
        return detector_stats(self.store)

    def annotate(self, pattern_id: str, label: Label, note: str = "", author: str = "",
                 actor: str = "cli") -> Annotation:
        """Record a verdict or a note on a pattern (and its audit row); UnknownPattern when there is none,
        ValueError for control characters in the note (lines and tabs allowed) or the author."""
        if NOTE_CONTROL_CHARACTERS.search(note):
            raise ValueError("note: control characters other than line breaks and tabs are not allowed")
        if CONTROL_CHARACTERS.search(author):
            raise ValueError("author: control characters are not allowed (one line of text)")
        return add_annotation(self.store, pattern_id, label, note, author, actor=actor)

    def count(self, query: PatternQuery) -> int:
        return self.store.count("pattern_events", start=query.start, end=query.end, where=query.filters()).get("", 0)

    def export_text(self, query: PatternQuery, fmt: ExportFormat,
                    on_page: Callable[[int], None] = lambda rows: None) -> Iterator[str]:
        """The query's pattern events as CSV or JSON text chunks, read page by page (memory stays
        flat). The first page is read now, so a store failure is raised here rather than midway
        through the text. `on_page` gets the size of each page read."""
        pages = iter_patterns(self.store, query, self.config.api.max_page)
        first = next(pages, None)

        def counted() -> Iterator[list[PatternEvent]]:
            if first is None:
                return
            for page in itertools.chain([first], pages):
                on_page(len(page))
                yield page

        return export_chunks(counted(), fmt)

    def export(self, query: PatternQuery, fmt: ExportFormat, out: Path,
               on_page: Callable[[int], None] = lambda rows: None) -> dict[str, Any]:
        """Write the query's pattern events to `out` (see `export_text`); a file appears whole or not
        at all. A symlink's target is written, not the link replaced; a device or a FIFO (/dev/null, a
        pipe) is written through, as the shell's `>` would. `on_page` gets the size of each page written."""
        written = 0

        def count(rows: int) -> None:
            nonlocal written
            written += rows
            on_page(rows)

        def write(path: Path) -> None:
            with path.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(self.export_text(query, fmt, count))

        target = out.resolve()
        if target.exists() and not target.is_file():  # renaming over it would delete a device node
            write(target)
        else:
            staged = target.with_name(f".{target.name}.partial")
            try:
                write(staged)
                staged.replace(target)
            except BaseException:  # a store error, a full disk, Ctrl-C: no half-written file left behind
                staged.unlink(missing_ok=True)
                raise
        return {"patterns": written, "format": fmt, "out": str(out),
                "start": iso(query.start), "end": iso(query.end)}
