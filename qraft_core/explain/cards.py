"""Rule-based explanation cards, built from a pattern event's structured fields only.

Every number on a card is a field of the pattern event or of its clean-data
context, formatted; the templates in `config/cards.yaml` only choose the words.
Every name from the data (stream, field, state, sample text) enters a template as
literal inline Markdown (`markdown_inline`), so a card's lines are the templates' lines
whatever the data holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from qraft_core.annotations import Annotation, annotation_line
from qraft_core.config import config_dir
from qraft_core.display import markdown_inline
from qraft_core.events import AlgorithmInfo, Contributor, PatternEvent, iso, utc
from qraft_core.explain.context import ContextSummary, SourceContext
from qraft_core.explain.templates import (
    CardsConfig,
    LanguageCards,
    default_cards_config,
    field_name,
    fill,
    plugin_phrase,
    unit_name,
)

Mode = Literal["human", "llm"]
# Metric units whose values are fractions, shown as percentages.
FRACTION_UNITS = frozenset({"relative", "ratio", "fraction"})
# A difference in the field's own (unnamed) unit.
DELTA_UNIT = "delta"
# Marks a context line shown one level deeper (a sample text under its summary line).
NESTED = "\t"


class MetricChange(BaseModel):
    metric: str
    value: float
    unit: str
    text: str


class Card(BaseModel):
    """One explanation card: the structured facts, their wording and the Markdown."""

    pattern_id: str
    type: str
    lang: str
    mode: Mode
    label: str
    title: str
    time: str
    window_start: str
    streams: list[str]
    summary: str
    prev_state: str
    new_state: str
    changes: list[MetricChange]
    metrics: dict[str, float]
    contributors: list[Contributor]
    confidence: float
    cross_validated: bool
    agreed: list[AlgorithmInfo]
    algorithm: AlgorithmInfo
    action: str
    context: ContextSummary
    replay_command: str
    annotations: list[Annotation]
    llm_text: str | None = None
    llm_model: str | None = None
    note: str | None = None
    markdown: str


def fmt_number(value: float) -> str:
    """A number as a card shows it: whole numbers plainly, others to six significant digits.

    >>> [fmt_number(v) for v in (42000.5, 3.0, 0.123456789, -12.25)]
    ['42000.5', '3', '0.123457', '-12.25']
    """
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.2f}"


def change_text(value: float, unit: str, unit_label: str | None = None) -> str:
    """A signed change with its unit (shown as `unit_label` when given); fractions are shown as percentages.

    >>> change_text(0.37, "relative"), change_text(-2.5, "%"), change_text(120.0, "BTC")
    ('+37%', '-2.5%', '+120 BTC')
    >>> change_text(-1.5, "delta"), change_text(4.5, "pp", "个百分点")
    ('-1.5', '+4.5 个百分点')
    """
    if unit == DELTA_UNIT:
        unit = unit_label = ""
    if unit in FRACTION_UNITS:
        return f"{value * 100:+.1f}%".replace(".0%", "%")
    if unit == "%":
        return f"{value:+.1f}%".replace(".0%", "%")
    sign = "+" if value > 0 else ""
    return f"{sign}{fmt_number(value)} {unit_label if unit_label is not None else unit}".rstrip()


def fmt_time(ts: datetime) -> str:
    return utc(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_minute(ts: datetime) -> str:
    return utc(ts).strftime("%Y-%m-%d %H:%M")


class _Wording:
    """Fills one language's templates, naming the template in every error."""

    def __init__(self, cards: CardsConfig, lang: str) -> None:
        self.lang = lang
        self.language: LanguageCards = cards.language(lang)

    def phrase(self, name: str, /, **values: object) -> str:
        if name in type(self.language.phrases).model_fields:
            template, where = getattr(self.language.phrases, name), f"cards.yaml: languages.{self.lang}.phrases"
        else:
            template, where = plugin_phrase(name, self.lang), f"plugin phrases ({self.lang})"
        return fill(template, values, f"{where}.{name}")

    def type_part(self, pattern: PatternEvent, part: str, values: dict[str, object]) -> str:
        template = getattr(self.language.types[pattern.type], part)
        return fill(template, values, f"cards.yaml: languages.{self.lang}.types.{pattern.type.value}.{part}")

    def field(self, name: str) -> str:
        """The display name of a field, as literal Markdown."""
        return markdown_inline(field_name(self.language, self.lang, name))

    def named(self, name: str) -> str:
        """The display name with the raw field name beside it, when they differ."""
        display, raw = self.field(name), markdown_inline(name)
        return display if display == raw else self.phrase("named_field", name=display, field=raw)

    def change(self, value: float, unit: str) -> str:
        # A unit may come from the data (a column's `250 ms`), so it is literal Markdown like a name.
        return change_text(value, unit, markdown_inline(unit_name(self.language, self.lang, unit)))

    def join(self, items: Iterable[str]) -> str:
        return self.phrase("separator").join(items)


def _changes(pattern: PatternEvent, words: _Wording) -> tuple[list[MetricChange], list[str]]:
    """Each measured metric: its level before and after the finding (in the stream's own
    units, from `details.metrics`) and the change, or the change alone without levels; and
    the short form the summary sentence uses (display name and change)."""
    units, levels = pattern.details.metric_units, pattern.details.metrics
    changes, short = [], []
    for metric, value in sorted(pattern.details.metric_changes.items()):
        unit = units.get(metric, "")
        change = words.change(value, unit)
        before, after = levels.get(f"{metric}_before"), levels.get(f"{metric}_after")
        text = (
            words.phrase("change_levels", field=words.named(metric), before=fmt_number(before),
                         after=fmt_number(after), change=change)
            if before is not None and after is not None
            else f"{words.named(metric)} {change}"
        )
        changes.append(MetricChange(metric=metric, value=value, unit=unit, text=text))
        short.append(f"{words.field(metric)} {change}")
    return changes, short


def _agreed(pattern: PatternEvent) -> list[AlgorithmInfo]:
    """Every detector merged into the finding (`algorithms`), each once."""
    seen: dict[tuple[str, str, str], AlgorithmInfo] = {}
    for algo in pattern.algorithms or [pattern.algorithm]:
        seen.setdefault((algo.name, algo.version, str(algo.params.get("detector", ""))), algo)
    return list(seen.values())


def _algo_name(algo: AlgorithmInfo) -> str:
    return f"{algo.name} {algo.version}".strip()


def _agreed_text(pattern: PatternEvent, agreed: list[AlgorithmInfo], words: _Wording) -> str:
    """Who reported the finding: several engines (cross-validated), several detectors of one, or one."""
    names = words.join(dict.fromkeys(_algo_name(a) for a in agreed))
    if pattern.cross_validated:
        return words.phrase("cross_validated", agreed=names, engine_count=len(pattern.engines))
    if len(agreed) > 1:
        return words.phrase("one_engine", agreed=names, detector_count=len(agreed))
    return words.phrase("single_engine", algorithm=names)


def _context_lines(context: ContextSummary, pattern_id: str, words: _Wording) -> list[str]:
    lines = [source_line for source in context.sources for source_line in _source_lines(source, words)]
    if not any(source.events for source in context.sources):
        lines = [words.phrase("no_context")]
    return [*lines, words.phrase("context_rows", pattern_id=pattern_id)]


def _source_lines(source: SourceContext, words: _Wording) -> list[str]:
    """The source's counts, then each summary line with its sample texts indented under it."""
    lines = [
        words.phrase(
            "context_source",
            source=markdown_inline(source.source),
            events=source.events,
            before=source.before,
            after=source.after,
        )
    ]
    for line in source.lines:
        values = {
            key: words.named(value) if key == "field" and isinstance(value, str)
            else markdown_inline(value) if isinstance(value, str)
            else fmt_number(value) if isinstance(value, float)
            else value
            for key, value in line.values.items()
        }
        lines.append(words.phrase(line.phrase, **values))
        lines += [NESTED + words.phrase("context_example", text=markdown_inline(text)) for text in line.examples]
    return lines


def _states(pattern: PatternEvent) -> dict[str, str]:
    """The detector's words for the state before and after (category values, cluster names), as literal Markdown."""
    return {
        "prev_state": markdown_inline(pattern.details.prev_state or "?"),
        "new_state": markdown_inline(pattern.details.new_state or "?"),
    }


def _card_values(
    pattern: PatternEvent,
    context: ContextSummary,
    contributors: list[Contributor],
    short_changes: list[str],
    words: _Wording,
) -> dict[str, object]:
    """The fields every card-level template may use (templates.CARD_FIELDS)."""
    return {
        "pattern_id": pattern.pattern_id,
        "type_name": words.language.types[pattern.type].title,
        "time": fmt_time(pattern.timestamp),
        "window_start": fmt_time(pattern.window_start),
        "streams": words.join(markdown_inline(stream) for stream in pattern.source_streams),
        **_states(pattern),
        "changes": words.join(short_changes) or words.phrase("no_changes"),
        "contributors": words.join(
            words.phrase("scored_field", field=words.field(c.field), score=f"{c.score:.2f}") for c in contributors
        )
        or words.phrase("no_contributors"),
        "top_field": words.field(contributors[0].field) if contributors else "?",
        "confidence": f"{pattern.confidence:.2f}",
        "agreed": words.join(_algo_name(a) for a in _agreed(pattern)),
        "algorithm": pattern.algorithm.name,
        "algorithm_version": pattern.algorithm.version,
        "context_minutes": context.minutes,
    }


def _markdown(
    pattern: PatternEvent,
    context: ContextSummary,
    annotations: Sequence[Annotation],
    contributors: list[Contributor],
    parts: dict[str, str],
    words: _Wording,
) -> str:
    """The card as Markdown: a heading, the summary, then one bullet per section."""
    if pattern.details.prev_state or pattern.details.new_state:
        state = words.phrase("state_change", **_states(pattern))
    else:
        state = words.phrase("no_state_change")
    params = json.dumps(pattern.algorithm.params, sort_keys=True, ensure_ascii=False)
    window = words.phrase(
        "context_window", start=fmt_minute(context.start), end=fmt_minute(context.end), minutes=context.minutes
    )
    notes = [
        words.phrase("annotation", **{
            **{key: markdown_inline(value) for key, value in annotation_line(a).items()},
            "label": words.language.labels[a.label],
        })
        for a in annotations
    ]
    bullet = "\n  - "
    sections = {
        "what_changed": state,
        "by_how_much": parts["changes"] or words.phrase("no_changes"),
        "contributors": words.join(
            words.phrase("scored_field", field=words.named(c.field), score=f"{c.score:.2f}") for c in contributors
        )
        or words.phrase("no_contributors"),
        "confidence": f"{pattern.confidence:.2f}",
        "agreed": parts["agreed"],
        "action": parts["action"],
        "algorithm": f"{_algo_name(pattern.algorithm)} `{params}`",
        "context": window
        + "".join(
            "\n    - " + line.removeprefix(NESTED) if line.startswith(NESTED) else bullet + line
            for line in _context_lines(context, pattern.pattern_id, words)
        ),
        "replay": f"`{context.replay_command}`",
        "annotations": bullet + bullet.join(notes)
        if notes
        else words.phrase("no_annotations", pattern_id=pattern.pattern_id),
        "pattern": f"`{pattern.pattern_id}`",
    }
    headings = words.language.headings
    lines = [f"- {words.phrase('heading', heading=getattr(headings, key))} {text}" for key, text in sections.items()]
    return "\n".join([f"### {parts['title']} · {fmt_time(pattern.timestamp)}", "", parts["summary"], "", *lines])


def render_card(
    pattern: PatternEvent,
    context: ContextSummary,
    annotations: Sequence[Annotation],
    lang: str,
    cards: CardsConfig | None = None,
) -> Card:
    """The rule-based card of one pattern in `lang` ("en" or "zh").

    `cards` defaults to `cards.yaml` in the configuration folder.
    """
    cards = cards or default_cards_config(str(config_dir()))
    words = _Wording(cards, lang)
    changes, short_changes = _changes(pattern, words)
    contributors = sorted(pattern.explain.top_contributors, key=lambda c: -c.score)
    agreed = _agreed(pattern)
    values = _card_values(pattern, context, contributors, short_changes, words)
    parts = {
        "title": words.type_part(pattern, "title", values),
        "summary": words.type_part(pattern, "summary", values),
        "action": words.type_part(pattern, "action", values),
        "agreed": _agreed_text(pattern, agreed, words),
        "changes": words.join(c.text for c in changes),
    }
    return Card(
        pattern_id=pattern.pattern_id,
        type=pattern.type.value,
        lang=lang,
        mode="human",
        label="rule-based",
        title=parts["title"],
        time=iso(pattern.timestamp),
        window_start=iso(pattern.window_start),
        streams=pattern.source_streams,
        summary=parts["summary"],
        prev_state=pattern.details.prev_state,
        new_state=pattern.details.new_state,
        changes=changes,
        metrics=pattern.details.metrics,
        contributors=contributors,
        confidence=pattern.confidence,
        cross_validated=pattern.cross_validated,
        agreed=agreed,
        algorithm=pattern.algorithm,
        action=parts["action"],
        context=context,
        replay_command=context.replay_command,
        annotations=list(annotations),
        markdown=_markdown(pattern, context, annotations, contributors, parts, words),
    )
