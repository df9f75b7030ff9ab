"""Pattern events for people: list, show as a card, annotate, export."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from qraft_core.annotations import Annotation, Label, UnknownPattern, add_annotation
from qraft_core.config import QraftConfig
from qraft_core.events import PatternEvent, PatternType, iso
from qraft_core.explain.cards import Card, Mode
from qraft_core.explain.catalog import (
    PatternQuery,
    export_chunks,
    iter_patterns,
    load_pattern,
    patterns_page,
    resolve_range,
)
from qraft_core.explain.llm import LlmClient
from qraft_core.explain.materialize import explain_pattern
from qraft_core.explain.templates import load_cards_config
from qraft_core.store.base import EventStore

ExportFormat = Literal["csv", "json"]


@dataclass
class PatternService:
    store: EventStore
    config: QraftConfig
    config_path: Path
    llm: LlmClient | None = None  # None: the one explain.llm configures

    def query(self, type_: str | None = None, since: datetime | None = None, until: datetime | None = None,
              source: str | None = None, min_confidence: float | None = None, capped: bool = True) -> PatternQuery:
        """The query of these filters; `capped`: spans at most api.max_range_days (listings, not exports).
        Raises QueryError for a range it refuses."""
        start, end = resolve_range(self.store, since, until, self.config.api.max_range_days if capped else None)
        return PatternQuery(start, end, PatternType(type_) if type_ else None, source, min_confidence)

    def list(self, query: PatternQuery, limit: int) -> list[PatternEvent]:
        """The first `limit` pattern events of the query, in time order."""
        page, _ = patterns_page(self.store, query, limit)
        return page

    def get(self, pattern_id: str) -> PatternEvent:
        pattern = load_pattern(self.store, pattern_id)
        if pattern is None:
            raise UnknownPattern(f"no pattern with id {pattern_id!r}")
        return pattern

    def show(self, pattern_id: str, mode: Mode = "human", lang: str | None = None) -> Card:
        """The explanation card of one pattern (UnknownPattern when there is none)."""
        cards = load_cards_config(self.config_path)
        language = lang or self.config.explain.language
        return explain_pattern(self.store, self.config, cards, self.get(pattern_id), language, mode, self.llm)

    def annotate(self, pattern_id: str, label: Label, note: str = "", author: str = "",
                 actor: str = "cli") -> Annotation:
        """Record a verdict or a note on a pattern (and its audit row); UnknownPattern when there is none."""
        return add_annotation(self.store, pattern_id, label, note, author, actor=actor)

    def count(self, query: PatternQuery) -> int:
        return self.store.count("pattern_events", start=query.start, end=query.end, where=query.filters()).get("", 0)

    def export(self, query: PatternQuery, fmt: ExportFormat, out: Path,
               on_page: Callable[[int], None] = lambda rows: None) -> dict[str, Any]:
        """Write the query's pattern events to `out` page by page (memory stays flat); the file
        appears whole or not at all. `on_page` gets the size of each page written."""
        written = 0

        def counted() -> Iterator[list[PatternEvent]]:
            nonlocal written
            for page in iter_patterns(self.store, query, self.config.api.max_page):
                written += len(page)
                on_page(len(page))
                yield page

        staged = out.with_name(f".{out.name}.partial")
        with staged.open("w", encoding="utf-8", newline="") as handle:
            for chunk in export_chunks(counted(), fmt):
                handle.write(chunk)
        staged.replace(out)
        return {"patterns": written, "format": fmt, "out": str(out),
                "start": iso(query.start), "end": iso(query.end)}
