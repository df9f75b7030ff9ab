"""Optional LLM explanations through an OpenAI-compatible chat endpoint.

The model sees the pattern event and its context summary and writes prose.
Its text is added to the rule-based card under an "LLM-based" label and never
replaces a structured fact; when the endpoint is slow, failing or answers
nonsense, the rule-based card is returned with a note saying why.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Protocol

import httpx

from qraft_core.config import LlmConfig
from qraft_core.display import printable
from qraft_core.events import PatternEvent
from qraft_core.explain.cards import Card
from qraft_core.explain.context import ContextSummary
from qraft_core.explain.templates import CardsConfig, fill

LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class LlmError(RuntimeError):
    """The LLM gave no usable answer; the message says why, for the card's note."""


class LlmClient(Protocol):
    model: str

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply text, or LlmError."""
        ...


class OpenAiCompatibleClient:
    """POST {url}/v1/chat/completions with a bearer key, as OpenAI and compatible servers accept."""

    def __init__(
        self, url: str, model: str, api_key: str = "", timeout_s: float = 20.0, max_tokens: int = 400
    ) -> None:
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else f"{base}/v1/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    @classmethod
    def from_config(
        cls, config: LlmConfig, environ: Mapping[str, str] | None = None
    ) -> OpenAiCompatibleClient:
        env = os.environ if environ is None else environ
        return cls(
            config.url, config.model, env.get(config.api_key_env, ""), config.timeout_s, config.max_tokens
        )

    def complete(self, messages: list[dict[str, str]]) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0}
        try:
            response = httpx.post(self.endpoint, json=request, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise LlmError(f"no answer within {self.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise LlmError(f"cannot reach the LLM endpoint: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise LlmError(f"the LLM endpoint answered HTTP {response.status_code}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LlmError("the LLM endpoint's answer is not a chat completion") from None
        if not isinstance(content, str) or not content.strip():
            raise LlmError("the LLM endpoint's answer has no text")
        # Roughly max_tokens worth of characters: a runaway answer is cut, not stored whole.
        return _CONTROL.sub("", content).strip()[: self.max_tokens * 8]


def llm_client(config: LlmConfig) -> LlmClient | None:
    """The configured client, or None when LLM explanations are switched off."""
    if not config.enabled or not config.url or not config.model:
        return None
    return OpenAiCompatibleClient.from_config(config)


def build_messages(pattern: PatternEvent, context: ContextSummary, lang: str) -> list[dict[str, str]]:
    """The prompt: instructions, then the pattern event and its context summary as JSON."""
    facts = {"pattern_event": pattern.model_dump(mode="json"), "context": context.model_dump(mode="json")}
    system = (
        "You explain findings of an automated pattern detector on event streams to an analyst. "
        "Use only the facts in the JSON you are given; never invent numbers, causes or events. "
        "Say what changed, how strongly, which fields drove it, what it may mean and what to check, "
        f"and say plainly what is uncertain. Answer in {LANGUAGE_NAMES.get(lang, 'English')}, "
        "in at most 150 words of plain prose."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(facts, ensure_ascii=False, sort_keys=True)},
    ]


def with_llm(
    card: Card,
    pattern: PatternEvent,
    client: LlmClient | None,
    cards: CardsConfig,
    disabled_reason: str = "LLM explanations are switched off (llm.enabled in qraft.yaml)",
) -> Card:
    """`card` plus the LLM's text, labelled; or `card` with a note when no usable text came back."""
    try:
        if client is None:
            raise LlmError(disabled_reason)
        text = client.complete(build_messages(pattern, card.context, card.lang))
    except LlmError as exc:
        note = fill(
            cards.language(card.lang).phrases.llm_fallback,
            {"reason": str(exc)},
            f"cards.yaml: languages.{card.lang}.phrases.llm_fallback",
        )
        return card.model_copy(update={"note": note, "markdown": f"> {note}\n\n{card.markdown}"})
    return labelled(card, text, client.model, cards)


def labelled(card: Card, text: str, model: str, cards: CardsConfig) -> Card:
    """`card` with an LLM's text appended under the "LLM-based" label; the facts stay as they are."""
    phrases = cards.language(card.lang).phrases
    label = fill(phrases.llm_label, {"model": model}, f"cards.yaml: languages.{card.lang}.phrases.llm_label")
    # Quoted line by line, so it cannot add lines of the card's own; control characters and bidi
    # overrides (an LLM may repeat names from the data) shown as escapes, as in the card above.
    quoted = "\n".join(f"> {printable(line)}" if line else ">" for line in text.splitlines())
    return card.model_copy(
        update={
            "mode": "llm",
            "label": "LLM-based",
            "llm_text": text,
            "llm_model": model,
            "markdown": f"{card.markdown}\n\n#### {label}\n\n{quoted}",
        }
    )
