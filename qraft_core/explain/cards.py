"""Rule-based explanation cards, built from a pattern event's structured fields only.

Every number on a card is a field of the pattern event or of its clean-data
context, formatted; the templates in `config/cards.yaml` only choose the words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from qraft_core.annotations import Annotation, annotation_line
from qraft_core.config import config_dir
from qraft_core.events import AlgorithmInfo, Contributor, PatternEvent, iso, utc
from qraft_core.explain.context import ContextSummary, SourceContext
from qraft_core.explain.templates import (
    CardsConfig,
    LanguageCards,
    default_cards_config,
    field_name,
    fill,
    plugin_phrase,
)

Mode = Literal["human", "llm"]
# Metric units whose values are fractions, shown as percentages.
FRACTION_UNITS = frozenset({"relative", "ratio", "fraction"})
# A difference in the field's own (unnamed) unit.
DELTA_UNIT = "delta"


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


def change_text(value: float, unit: str) -> str:
    """A signed change with its unit; fractions are shown as percentages.

    >>> change_text(0.37, "relative"), change_text(-2.5, "%"), change_text(120.0, "BTC")
    ('+37%', '-2.5%', '+120 BTC')
    >>> change_text(-1.5, "delta")
    '-1.5'
    """
    if unit == DELTA_UNIT:
        unit = ""
    if unit in FRACTION_UNITS:
        return f"{value * 100:+.1f}%".replace(".0%", "%")
    if unit == "%":
        return f"{value:+.1f}%".replace(".0%", "%")
    sign = "+" if value > 0 else ""
    return f"{sign}{fmt_number(value)} {unit}".rstrip()


def fmt_time(ts: datetime) -> str:
    return utc(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_minute(ts: datetime) -> str:
    return utc(ts).strftime("%Y-%m-%d %H:%M")


class _Wording:
    """Fills one language's templates, naming the template in every error."""

    def __init__(self, cards: CardsConfig, lang: str) -> None:
        self.lang = lang
        self.language: LanguageCards = cards.language(lang)

    def phrase(self, name: str, **values: object) -> str:
        if name in type(self.language.phrases).model_fields:
            template, where = getattr(self.language.phrases, name), f"cards.yaml: languages.{self.lang}.phrases"
        else:
            template, where = plugin_phrase(name, self.lang), f"plugin phrases ({self.lang})"
        return fill(template, values, f"{where}.{name}")

    def type_part(self, pattern: PatternEvent, part: str, values: dict[str, object]) -> str:
        template = getattr(self.language.types[pattern.type], part)
        return fill(template, values, f"cards.yaml: languages.{self.lang}.types.{pattern.type.value}.{part}")

    def field(self, name: str) -> str:
        return field_name(self.language, self.lang, name)


def _changes(pattern: PatternEvent, words: _Wording) -> list[MetricChange]:
    units = pattern.details.metric_units
    return [
        MetricChange(
            metric=metric,
            value=value,
            unit=units.get(metric, ""),
            text=f"{words.field(metric)} {change_text(value, units.get(metric, ''))}",
        )
        for metric, value in sorted(pattern.details.metric_changes.items())
    ]


def _agreed(pattern: PatternEvent) -> list[AlgorithmInfo]:
    return pattern.algorithms or [pattern.algorithm]


def _algo_name(algo: AlgorithmInfo) -> str:
    return f"{algo.name} {algo.version}".strip()


def _context_lines(context: ContextSummary, pattern_id: str, words: _Wording) -> list[str]:
    lines = [source_line for source in context.sources for source_line in _source_lines(source, words)]
    if not any(source.events for source in context.sources):
        lines = [words.phrase("no_context")]
    return [*lines, words.phrase("context_rows", pattern_id=pattern_id)]


def _source_lines(source: SourceContext, words: _Wording) -> list[str]:
    lines = [
        words.phrase(
            "context_source",
            source=source.source,
            events=source.events,
            before=source.before,
            after=source.after,
        )
    ]
    for line in source.lines:
        values = {k: fmt_number(v) if isinstance(v, float) else v for k, v in line.values.items()}
        if "field" in values:
            values["field"] = words.field(str(values["field"]))
        lines.append(words.phrase(line.phrase, **values))
    return lines


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
    changes = _changes(pattern, words)
    contributors = sorted(pattern.explain.top_contributors, key=lambda c: -c.score)
    agreed = _agreed(pattern)
    values: dict[str, object] = {
        "pattern_id": pattern.pattern_id,
        "type_name": words.language.types[pattern.type].title,
        "time": fmt_time(pattern.timestamp),
        "window_start": fmt_time(pattern.window_start),
        "streams": ", ".join(pattern.source_streams),
        "prev_state": pattern.details.prev_state or "?",
        "new_state": pattern.details.new_state or "?",
        "changes": ", ".join(c.text for c in changes) or words.phrase("no_changes"),
        "contributors": ", ".join(f"{words.field(c.field)} ({c.score:.2f})" for c in contributors)
        or words.phrase("no_contributors"),
        "top_field": words.field(contributors[0].field) if contributors else "?",
        "confidence": f"{pattern.confidence:.2f}",
        "agreed": ", ".join(_algo_name(a) for a in agreed),
        "algorithm": pattern.algorithm.name,
        "algorithm_version": pattern.algorithm.version,
        "context_minutes": context.minutes,
    }
    headings = words.language.headings
    if pattern.cross_validated:
        agreed_text = words.phrase("cross_validated", agreed=values["agreed"], engine_count=len(pattern.engines))
    else:
        agreed_text = words.phrase("single_engine", algorithm=_algo_name(pattern.algorithm))
    if pattern.details.prev_state or pattern.details.new_state:
        state_text = words.phrase(
            "state_change", prev_state=values["prev_state"], new_state=values["new_state"]
        )
    else:
        state_text = words.phrase("no_state_change")
    title = words.type_part(pattern, "title", values)
    action = words.type_part(pattern, "action", values)
    summary = words.type_part(pattern, "summary", values)
    params = json.dumps(pattern.algorithm.params, sort_keys=True, ensure_ascii=False)
    window = words.phrase(
        "context_window",
        start=fmt_minute(context.start),
        end=fmt_minute(context.end),
        minutes=context.minutes,
    )
    notes = [
        words.phrase("annotation", **{**annotation_line(a), "label": words.language.labels[a.label]})
        for a in annotations
    ]
    bullet = "\n  - "
    context_lines = _context_lines(context, pattern.pattern_id, words)
    markdown = "\n".join(
        [
            f"### {title} · {values['time']}",
            "",
            summary,
            "",
            f"- **{headings.what_changed}:** {state_text}",
            f"- **{headings.by_how_much}:** {values['changes']}",
            f"- **{headings.contributors}:** {values['contributors']}",
            f"- **{headings.confidence}:** {values['confidence']}",
            f"- **{headings.agreed}:** {agreed_text}",
            f"- **{headings.action}:** {action}",
            f"- **{headings.algorithm}:** {_algo_name(pattern.algorithm)} `{params}`",
            f"- **{headings.context}:** {window}{bullet}{bullet.join(context_lines)}",
            f"- **{headings.replay}:** `{context.replay_command}`",
            f"- **{headings.annotations}:** "
            + (
                bullet + bullet.join(notes)
                if notes
                else words.phrase("no_annotations", pattern_id=pattern.pattern_id)
            ),
            f"- **{headings.pattern}:** `{pattern.pattern_id}`",
        ]
    )
    return Card(
        pattern_id=pattern.pattern_id,
        type=pattern.type.value,
        lang=lang,
        mode="human",
        label="rule-based",
        title=title,
        time=iso(pattern.timestamp),
        window_start=iso(pattern.window_start),
        streams=pattern.source_streams,
        summary=summary,
        prev_state=pattern.details.prev_state,
        new_state=pattern.details.new_state,
        changes=changes,
        metrics=pattern.details.metrics,
        contributors=contributors,
        confidence=pattern.confidence,
        cross_validated=pattern.cross_validated,
        agreed=agreed,
        algorithm=pattern.algorithm,
        action=action,
        context=context,
        replay_command=context.replay_command,
        annotations=list(annotations),
        markdown=markdown,
    )
