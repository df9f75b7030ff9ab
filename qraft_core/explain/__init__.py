"""Explanation cards: rule-based (English and Chinese) from structured fields, optionally LLM-based."""

from qraft_core.explain.cards import Card, render_card
from qraft_core.explain.context import ContextSummary, load_context
from qraft_core.explain.llm import LlmClient, LlmError, OpenAiCompatibleClient
from qraft_core.explain.materialize import explain_pattern, materialize_cards
from qraft_core.explain.templates import CardsConfig, TemplateError, load_cards_config

__all__ = [
    "Card",
    "CardsConfig",
    "ContextSummary",
    "LlmClient",
    "LlmError",
    "OpenAiCompatibleClient",
    "TemplateError",
    "explain_pattern",
    "load_cards_config",
    "load_context",
    "materialize_cards",
    "render_card",
]
