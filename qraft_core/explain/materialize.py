"""Cards for stored patterns: written per window to `pattern_cards`, or built on request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from qraft_core.annotations import Annotation, list_annotations
from qraft_core.config import QraftConfig
from qraft_core.events import PatternEvent
from qraft_core.explain.cards import Card, Mode, render_card
from qraft_core.explain.context import load_context, load_contexts
from qraft_core.explain.llm import LlmClient, labelled, llm_client, with_llm
from qraft_core.explain.templates import LANGS, CardsConfig
from qraft_core.operators.pipeline import PreprocessingConfig
from qraft_core.store.base import EventStore, Filter

PREVIEW_CARDS = 3


def _card_rows(cards: Sequence[tuple[PatternEvent, Card]]) -> pl.DataFrame:
    now = datetime.now(UTC)
    return pl.DataFrame(
        {
            "pattern_id": [card.pattern_id for _, card in cards],
            "window_start": [pattern.window_start for pattern, _ in cards],
            "lang": [card.lang for _, card in cards],
            "mode": [card.mode for _, card in cards],
            "markdown": [card.markdown for _, card in cards],
            "body": [card.model_dump_json() for _, card in cards],
            "created_at": [now] * len(cards),
        },
        schema_overrides={"window_start": pl.Datetime("ms", "UTC"), "created_at": pl.Datetime("ms", "UTC")},
    )


def _by_pattern(annotations: Sequence[Annotation]) -> dict[str, list[Annotation]]:
    grouped: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        grouped.setdefault(annotation.pattern_id, []).append(annotation)
    return grouped


def materialize_cards(
    store: EventStore,
    config: QraftConfig,
    cards: CardsConfig,
    start: datetime,
    end: datetime,
    llm: LlmClient | None = None,
    preprocessing: PreprocessingConfig | None = None,
) -> dict[str, object]:
    """Write the cards of every pattern with window_start in [start, end) to `pattern_cards`.

    Rule-based cards are written in every language, replacing the window's
    previous ones. With `llm.enabled` (or an explicit `llm` client), LLM cards
    in the configured language are written too; patterns the LLM could not
    explain keep only their rule-based cards. `preprocessing` tells the stream of each context row
    (default: the configuration folder's `preprocessing.yaml`).
    """
    cards = cards.with_actions(config.explain.actions)
    minutes = config.explain.context_minutes
    with store.session():
        frame = store.select(
            "pattern_events", start=start, end=end, columns=["body"], order_by=("window_start", "pattern_id")
        )
        patterns = [PatternEvent.model_validate_json(body) for body in frame["body"]]
        notes = _by_pattern(list_annotations(store, [p.pattern_id for p in patterns]))
        contexts = load_contexts(store, patterns, minutes, preprocessing)
    human = [
        (pattern, render_card(pattern, context, notes.get(pattern.pattern_id, []), lang, cards))
        for pattern, context in zip(patterns, contexts, strict=True)
        for lang in LANGS
    ]
    client = llm if llm is not None else llm_client(config.llm)
    explained = []
    if client is not None:
        for pattern, card in human:
            if card.lang == config.explain.language:
                candidate = with_llm(card, pattern, client, cards)
                if candidate.mode == "llm":
                    explained.append((pattern, candidate))
    with store.session():
        written = store.replace_window(
            "pattern_cards", start, end, _card_rows(human), where=[Filter("mode", "=", "human")]
        )
        if client is not None:
            written += store.replace_window(
                "pattern_cards", start, end, _card_rows(explained), where=[Filter("mode", "=", "llm")]
            )
    by_type: dict[str, int] = {}
    for pattern in patterns:
        by_type[pattern.type.value] = by_type.get(pattern.type.value, 0) + 1
    preview = [card.markdown for _, card in human if card.lang == config.explain.language][:PREVIEW_CARDS]
    return {
        "cards": written,
        "patterns": len(patterns),
        "by_type": by_type,
        "llm_cards": len(explained),
        "markdown": preview,
    }


def explain_pattern(
    store: EventStore,
    config: QraftConfig,
    cards: CardsConfig,
    pattern: PatternEvent,
    lang: str,
    mode: Mode = "human",
    llm: LlmClient | None = None,
) -> Card:
    """The current card of one pattern (fresh context and annotations).

    In LLM mode a stored LLM text is reused; otherwise the LLM is asked and a
    usable answer is stored. Without one, the rule-based card carries a note.
    """
    cards = cards.with_actions(config.explain.actions)
    with store.session():
        context = load_context(store, pattern, config.explain.context_minutes)
        annotations = list_annotations(store, [pattern.pattern_id])
        stored = (
            store.select(
                "pattern_cards",
                where=[
                    Filter("pattern_id", "=", pattern.pattern_id),
                    Filter("lang", "=", lang),
                    Filter("mode", "=", "llm"),
                ],
                columns=["body"],
                limit=1,
            )
            if mode == "llm"
            else None
        )
    card = render_card(pattern, context, annotations, lang, cards)
    if mode == "human":
        return card
    if stored is not None and stored.height:
        body = json.loads(stored["body"][0])
        return labelled(card, body["llm_text"], body["llm_model"], cards)
    client = llm if llm is not None else llm_client(config.llm)
    explained = with_llm(card, pattern, client, cards)
    if explained.mode == "llm":
        store.insert("pattern_cards", _card_rows([(pattern, explained)]))
    return explained
