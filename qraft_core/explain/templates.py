"""Card templates (`config/cards.yaml`): wording per language and pattern type.

Templates are `str.format` strings over plain field names. Every placeholder is
checked when the file is loaded against the fields that template is given, so
a typo fails at start-up with the file, the template's key path and the field,
not in the middle of a run.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qraft_core.config import ConfigError, config_dir, parse_model, read_yaml
from qraft_core.events import PatternType
from qraft_core.registry import Registry

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

# Fields every card-level template (titles, summaries, actions) may use.
CARD_FIELDS = frozenset(
    {
        "pattern_id",
        "type_name",
        "time",
        "window_start",
        "streams",
        "prev_state",
        "new_state",
        "changes",
        "contributors",
        "top_field",
        "confidence",
        "agreed",
        "algorithm",
        "algorithm_version",
        "context_minutes",
    }
)
# Phrases are filled with their own small set of fields.
PHRASE_FIELDS: dict[str, frozenset[str]] = {
    "state_change": frozenset({"prev_state", "new_state"}),
    "no_state_change": frozenset(),
    "no_changes": frozenset(),
    "no_contributors": frozenset(),
    "cross_validated": frozenset({"agreed", "engine_count"}),
    "single_engine": frozenset({"algorithm"}),
    "one_engine": frozenset({"agreed", "detector_count"}),
    "named_field": frozenset({"name", "field"}),
    "zscore_field": frozenset({"field"}),
    "stat_field": frozenset({"field", "stat"}),
    "change_levels": frozenset({"field", "before", "after", "change"}),
    "heading": frozenset({"heading"}),
    "scored_field": frozenset({"field", "score"}),
    "separator": frozenset(),
    "context_example": frozenset({"text"}),
    "context_window": frozenset({"start", "end", "minutes"}),
    "context_source": frozenset({"source", "events", "before", "after"}),
    "context_field": frozenset({"field", "count", "min", "max", "first", "last"}),
    "no_context": frozenset(),
    "context_rows": frozenset({"pattern_id"}),
    "no_annotations": frozenset({"pattern_id"}),
    "annotation": frozenset({"label", "author", "created_at", "note"}),
    "llm_label": frozenset({"model"}),
    "llm_fallback": frozenset({"reason"}),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TypeTemplates(_Strict):
    title: str
    summary: str
    action: str


class Headings(_Strict):
    what_changed: str
    by_how_much: str
    contributors: str
    confidence: str
    agreed: str
    action: str
    context: str
    algorithm: str
    replay: str
    annotations: str
    pattern: str


class Phrases(_Strict):
    state_change: str
    no_state_change: str
    no_changes: str
    no_contributors: str
    cross_validated: str
    single_engine: str
    one_engine: str
    named_field: str
    zscore_field: str
    stat_field: str
    change_levels: str
    heading: str
    scored_field: str
    separator: str
    context_example: str
    context_window: str
    context_source: str
    context_field: str
    no_context: str
    context_rows: str
    no_annotations: str
    annotation: str
    llm_label: str
    llm_fallback: str


class LanguageCards(_Strict):
    headings: Headings
    phrases: Phrases
    types: dict[PatternType, TypeTemplates]
    labels: dict[Literal["confirmed", "false_alarm", "note"], str]
    # Display names of metric and contributor fields; unknown fields show as they are.
    fields: dict[str, str] = {}
    # Display names of metric units (e.g. pp); unknown units show as they are.
    units: dict[str, str] = {}
    # Names of the per-bar statistics of the `aggregate` operator (`value_max`: the bar maximum of value).
    stats: dict[str, str] = {}


class CardsConfig(_Strict):
    languages: dict[Lang, LanguageCards]

    def language(self, lang: str) -> LanguageCards:
        if lang not in self.languages:
            raise ValueError(f"no card templates for language {lang!r} (have: {', '.join(self.languages)})")
        return self.languages[lang]  # type: ignore[index]

    def with_actions(
        self, actions: Mapping[str, Mapping[str, str]], where: str = "qraft.yaml"
    ) -> CardsConfig:
        """A copy whose suggested actions are replaced by `explain.actions` ({type: {lang: text}})."""
        updated = self.model_copy(deep=True)
        for type_name, by_lang in actions.items():
            if type_name not in PatternType.__members__:
                raise ConfigError(
                    f"{where}: explain.actions.{type_name}: unknown pattern type "
                    f"(expected one of {', '.join(PatternType)})"
                )
            for lang, text in by_lang.items():
                key = f"explain.actions.{type_name}.{lang}"
                if lang not in updated.languages:
                    raise ConfigError(
                        f"{where}: {key}: unknown language (expected one of {', '.join(LANGS)})"
                    )
                check_template(text, CARD_FIELDS, f"{where}: {key}")
                updated.languages[lang].types[PatternType(type_name)].action = text  # type: ignore[index]
        return updated


class TemplateError(ConfigError):
    """A template names a field it is not given."""


@dataclass(frozen=True)
class PluginPhrase:
    """A phrase a plugin brings for its own context lines, in every language."""

    fields: frozenset[str]
    text: Mapping[str, str]


PLUGIN_PHRASES: Registry[PluginPhrase] = Registry("phrase")
# Display names of metric and contributor fields, per language, registered by plugins;
# `fields` in cards.yaml overrides them.
VOCABULARY: dict[str, Registry[str]] = {lang: Registry(f"{lang} field name") for lang in LANGS}
# The same for metric units (`units` in cards.yaml overrides them).
UNIT_VOCABULARY: dict[str, Registry[str]] = {lang: Registry(f"{lang} unit name") for lang in LANGS}
# A field of this suffix is already a z-score (the `normalize` operator's default).
ZSCORE_SUFFIX = "_z"


def register_phrase(name: str, fields: frozenset[str], text: Mapping[str, str]) -> None:
    """Make phrase `name` available to cards; every language needs a text using only `fields`."""
    if name in PHRASE_FIELDS:
        raise ValueError(f"phrase {name!r} is one of cards.yaml's own phrases")
    for lang in LANGS:
        if lang not in text:
            raise ValueError(f"phrase {name!r}: no text for language {lang!r}")
        check_template(text[lang], fields, f"phrase {name!r} ({lang})")
    PLUGIN_PHRASES.add(name, PluginPhrase(fields, dict(text)))


def register_vocabulary(
    names: Mapping[str, Mapping[str, str]], units: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """Display names of fields per language: {lang: {field: name}}, and of units likewise."""
    for vocabulary, given in ((VOCABULARY, names), (UNIT_VOCABULARY, units or {})):
        for lang, by_name in given.items():
            if lang not in vocabulary:
                raise ValueError(
                    f"vocabulary for unknown language {lang!r} (expected one of {', '.join(LANGS)})"
                )
            for key, display in by_name.items():
                vocabulary[lang].add(key, display)


def plugin_phrase(name: str, lang: str) -> str:
    if name not in PLUGIN_PHRASES:
        raise TemplateError(f"no phrase {name!r} in cards.yaml or any plugin")
    return PLUGIN_PHRASES[name].text[lang]


def field_name(cards: LanguageCards, lang: str, name: str) -> str:
    """A field's display name: cards.yaml's `fields`, then plugin vocabulary, else the name itself.

    A z-score field (`volume_z`) is named after the field it scores, as a z-score; a per-bar
    statistic (`value_max`) after its field and the statistic.
    """
    if name in cards.fields:
        return cards.fields[name]
    vocabulary = VOCABULARY.get(lang)
    if vocabulary is not None and name in vocabulary:
        return vocabulary[name]
    base, _, suffix = name.rpartition("_")
    where = f"cards.yaml: languages.{lang}.phrases"
    if base and f"_{suffix}" == ZSCORE_SUFFIX:
        return fill(cards.phrases.zscore_field, {"field": field_name(cards, lang, base)}, f"{where}.zscore_field")
    if base and suffix in cards.stats:
        values = {"field": field_name(cards, lang, base), "stat": cards.stats[suffix]}
        return fill(cards.phrases.stat_field, values, f"{where}.stat_field")
    return name


def unit_name(cards: LanguageCards, lang: str, unit: str) -> str:
    """A unit's display name: cards.yaml's `units`, then plugin vocabulary, else the unit itself."""
    if unit in cards.units:
        return cards.units[unit]
    vocabulary = UNIT_VOCABULARY.get(lang)
    return unit if vocabulary is None else vocabulary.get(unit, unit)


def template_fields(template: str, where: str) -> list[str]:
    """The placeholders of a template; only plain names are allowed.

    >>> template_fields("{time}: drift on {streams}", "t")
    ['time', 'streams']
    >>> template_fields("{a.b}", "cards.yaml: x")
    Traceback (most recent call last):
    ...
    qraft_core.explain.templates.TemplateError: cards.yaml: x: placeholder {a.b} must be a plain field name
    """
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"{where}: not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec:
            shown = name + (":" + spec if spec else "")
            raise TemplateError(f"{where}: placeholder {{{shown}}} must be a plain field name")
        names.append(name)
    return names


def check_template(template: str, allowed: frozenset[str], where: str) -> None:
    for name in template_fields(template, where):
        if name not in allowed:
            raise TemplateError(
                f"{where}: template references unknown field {name!r} "
                f"(available: {', '.join(sorted(allowed)) or 'none'})"
            )


def fill(template: str, values: Mapping[str, object], where: str) -> str:
    """The template with its fields filled; a field without a value is a TemplateError.

    >>> fill("{a} → {b}", {"a": "low", "b": "high"}, "t")
    'low → high'
    >>> fill("{a} {c}", {"a": 1}, "x")
    Traceback (most recent call last):
    ...
    qraft_core.explain.templates.TemplateError: x: template references field 'c', which this card lacks
    """
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise TemplateError(
            f"{where}: template references field {exc.args[0]!r}, which this card lacks"
        ) from None


def _validate(cards: CardsConfig, path: Path | str) -> None:
    for lang in LANGS:
        if lang not in cards.languages:
            raise ConfigError(
                f"{path}: languages.{lang}: missing (every card exists in {' and '.join(LANGS)})"
            )
    for lang, language in cards.languages.items():
        base = f"{path}: languages.{lang}"
        for pattern_type in PatternType:
            if pattern_type not in language.types:
                raise ConfigError(
                    f"{base}.types.{pattern_type.value}: missing (every pattern type needs a card)"
                )
        for pattern_type, templates in language.types.items():
            for part in ("title", "summary", "action"):
                check_template(
                    getattr(templates, part), CARD_FIELDS, f"{base}.types.{pattern_type.value}.{part}"
                )
        for phrase, allowed in PHRASE_FIELDS.items():
            check_template(getattr(language.phrases, phrase), allowed, f"{base}.phrases.{phrase}")
        for label in ("confirmed", "false_alarm", "note"):
            if label not in language.labels:
                raise ConfigError(f"{base}.labels.{label}: missing")


def load_cards_config(directory: Path | str | None = None) -> CardsConfig:
    """`cards.yaml` from the configuration folder, validated; ConfigError names file, key and field."""
    path = config_dir(directory) / "cards.yaml"
    cards = parse_model(CardsConfig, read_yaml(path), path)
    _validate(cards, path)
    return cards


@lru_cache(maxsize=4)
def default_cards_config(directory: str) -> CardsConfig:
    return load_cards_config(directory)
