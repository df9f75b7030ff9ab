"""LLM mode with a fake client: labelled text added to the facts, or the rule-based card with a note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qraft_core.config import LlmConfig
from qraft_core.explain import LlmError, load_cards_config, load_context, render_card
from qraft_core.explain.llm import OpenAiCompatibleClient, build_messages, llm_client, with_llm
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
DRIFT = example_patterns()[0]


class ScriptedClient:
    """Answers with a fixed text, or raises the given LlmError; records the prompts."""

    model = "fake-model"

    def __init__(self, answer: str | LlmError) -> None:
        self.answer = answer
        self.prompts: list[list[dict[str, str]]] = []

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.prompts.append(messages)
        if isinstance(self.answer, LlmError):
            raise self.answer
        return self.answer


@pytest.fixture(scope="module")
def human_card():  # type: ignore[no-untyped-def]
    store = MemoryStore()
    store.insert("clean_events", example_clean_events())
    return render_card(DRIFT, load_context(store, DRIFT, 5), [], "en", load_cards_config(REPO / "config"))


def test_llm_text_is_labelled_and_added_below_the_facts(human_card) -> None:  # type: ignore[no-untyped-def]
    cards = load_cards_config(REPO / "config")
    client = ScriptedClient("Volatility rose after a quiet hour.")
    card = with_llm(human_card, DRIFT, client, cards)
    assert (card.mode, card.label, card.llm_text, card.llm_model) == (
        "llm",
        "LLM-based",
        "Volatility rose after a quiet hour.",
        "fake-model",
    )
    assert card.markdown.startswith(human_card.markdown)
    assert card.markdown.endswith(
        "#### LLM-based explanation (fake-model); an aid only, the facts above are authoritative\n\n"
        "> Volatility rose after a quiet hour."
    )
    assert card.summary == human_card.summary and card.changes == human_card.changes


def test_llm_text_stays_quoted_with_control_characters_shown_as_escapes(human_card) -> None:  # type: ignore[no-untyped-def]
    cards = load_cards_config(REPO / "config")
    client = ScriptedClient("Load on web\x1b[2J rose\n- **Forged:** \u202e+1.5")
    card = with_llm(human_card, DRIFT, client, cards)
    assert card.markdown.endswith("> Load on web\\x1b[2J rose\n> - **Forged:** \\u202e+1.5")


def test_the_prompt_holds_the_pattern_event_and_its_context(human_card) -> None:  # type: ignore[no-untyped-def]
    system, user = build_messages(DRIFT, human_card.context, "zh")
    assert "Simplified Chinese" in system["content"] and "never invent numbers" in system["content"]
    facts = json.loads(user["content"])
    assert facts["pattern_event"]["pattern_id"] == DRIFT.pattern_id
    assert facts["context"]["sources"][0]["lines"][0]["values"]["price_max"] == 42087.5


@pytest.mark.parametrize("reason", ["no answer within 2s", "the LLM endpoint answered HTTP 500"])
def test_a_failed_llm_gives_the_rule_based_card_with_a_note(human_card, reason: str) -> None:  # type: ignore[no-untyped-def]
    card = with_llm(human_card, DRIFT, ScriptedClient(LlmError(reason)), load_cards_config(REPO / "config"))
    assert card.mode == "human" and card.llm_text is None
    assert card.note == f"LLM explanation unavailable ({reason}); this is the rule-based card"
    assert card.markdown == f"> {card.note}\n\n{human_card.markdown}"


def test_llm_switched_off_means_no_client_and_a_note(human_card) -> None:  # type: ignore[no-untyped-def]
    assert llm_client(LlmConfig()) is None
    card = with_llm(human_card, DRIFT, None, load_cards_config(REPO / "config"))
    assert card.note is not None and "llm.enabled" in card.note


def test_client_endpoint_and_key_come_from_config() -> None:
    config = LlmConfig(enabled=True, url="http://127.0.0.1:9/", model="m", api_key_env="MY_LLM_KEY")
    client = OpenAiCompatibleClient.from_config(config, environ={"MY_LLM_KEY": "s3cret"})
    assert (client.endpoint, client.model, client.api_key) == (
        "http://127.0.0.1:9/v1/chat/completions",
        "m",
        "s3cret",
    )
    direct = OpenAiCompatibleClient("https://llm.example/v1/chat/completions", "m")
    assert direct.endpoint == "https://llm.example/v1/chat/completions"
