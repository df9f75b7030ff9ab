"""Rule-based cards: every type in both languages, numbers only from the pattern and its context."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qraft_core.annotations import add_annotation
from qraft_core.config import ConfigError, ExplainConfig, QraftConfig
from qraft_core.events import Contributor, PatternEvent
from qraft_core.explain import load_cards_config, load_context, materialize_cards, render_card
from qraft_core.explain.cards import Card
from qraft_core.explain.context import ContextLine, ContextSummary, SourceContext
from qraft_core.explain.templates import CardsConfig
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns, pattern_rows
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d+(?:\.\d+)?")
PATTERNS = {p.type.value: p for p in example_patterns()}


@pytest.fixture(scope="module")
def cards() -> CardsConfig:
    return load_cards_config(REPO / "config")


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.insert("clean_events", example_clean_events())
    store.insert("pattern_events", pattern_rows(example_patterns()))
    return store


def unexplained_numbers(text: str, pattern: PatternEvent, context: ContextSummary) -> list[str]:
    """Numbers in `text` that are neither in the pattern event or its context nor derived from them."""
    sources = pattern.model_dump_json() + context.model_dump_json()
    allowed = [float(n) for n in NUMBER.findall(sources)]
    percentages = [abs(v) * 100 for v in pattern.details.metric_changes.values()]
    return [
        n
        for n in NUMBER.findall(text)
        if not any(abs(float(n) - a) <= 0.005 for a in allowed)
        and not any(abs(float(n) - p) <= 0.05 for p in percentages)
    ]


def card_for(store: MemoryStore, type_: str, lang: str, cards: CardsConfig) -> tuple[Card, ContextSummary]:
    pattern = PATTERNS[type_]
    context = load_context(store, pattern, 5)
    return render_card(pattern, context, [], lang, cards), context


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("type_", sorted(PATTERNS))
def test_every_number_on_every_card_comes_from_the_pattern_or_its_context(
    store: MemoryStore, cards: CardsConfig, type_: str, lang: str
) -> None:
    card, context = card_for(store, type_, lang, cards)
    pattern = PATTERNS[type_]
    assert unexplained_numbers(card.markdown, pattern, context) == []
    assert card.type == type_ and card.lang == lang and card.mode == "human"
    # Every section of the card is present, in the language asked for.
    language = cards.language(lang)
    for heading in language.headings.model_dump().values():
        assert f"- {language.phrases.heading.format(heading=heading)} " in card.markdown
    assert f"{pattern.confidence:.2f}" in card.markdown
    assert card.replay_command in card.markdown
    for contributor in pattern.explain.top_contributors:
        assert language.phrases.scored_field.format(field="", score=f"{contributor.score:.2f}") in card.markdown


def test_the_number_check_catches_an_invented_number(store: MemoryStore, cards: CardsConfig) -> None:
    card, context = card_for(store, "concept_drift", "en", cards)
    pattern = PATTERNS["concept_drift"]
    assert unexplained_numbers(card.markdown + " volatility +42.7%", pattern, context) == ["42.7"]


def test_drift_card_in_english_states_the_facts(store: MemoryStore, cards: CardsConfig) -> None:
    card, _ = card_for(store, "concept_drift", "en", cards)
    assert card.summary == (
        "2026-01-05 10:32:15 UTC: concept drift detected on binance_spot; price volatility +37%, "
        "trade volume +1.25 BTC. Main drivers: price volatility (0.60), trade volume (0.30)."
    )
    assert (
        "- **What changed:** Cluster#2 (low volatility) → Cluster#4 (high volatility) "
        "(in the detector's own words)" in card.markdown
    )
    assert "- **By how much:** price volatility (`volatility`) +37%, trade volume (`volume`) +1.25 BTC" in card.markdown
    assert (
        "- **Top contributing fields:** price volatility (`volatility`) (0.60), trade volume (`volume`) (0.30)"
        in card.markdown
    )
    assert "- **Confidence:** 0.87" in card.markdown
    assert (
        "- **Algorithms that agreed:** river.ADWIN 0.22.0, capymoa.ADWIN 0.15.1 "
        "(cross-validated by 2 engines)" in card.markdown
    )
    assert "  - binance_spot: 22 events (11 before, 11 after)" in card.markdown
    assert "  - 22 trades, price 42035 to 42087.5 (first 42035, last 42087.5), volume 0.66" in card.markdown
    assert card.replay_command == (
        "qraft replay --start 2026-01-05T10:27:00Z --end 2026-01-05T10:38:00Z --source binance_spot"
    )
    assert [c.text for c in card.changes] == ["price volatility (`volatility`) +37%", "trade volume (`volume`) +1.25 BTC"]
    assert card.label == "rule-based"


def test_drift_card_in_chinese(store: MemoryStore, cards: CardsConfig) -> None:
    card, _ = card_for(store, "concept_drift", "zh", cards)
    assert card.title == "概念漂移"
    assert card.summary == (
        "2026-01-05 10:32:15 UTC：在 binance_spot 上检测到概念漂移；价格波动率 +37%，成交量 +1.25 BTC。"
        "主要驱动字段：价格波动率（0.60），成交量（0.30）。"
    )
    assert "- **变化内容：** Cluster#2 (low volatility) → Cluster#4 (high volatility)（检测器原文）" in card.markdown
    assert "- **主要驱动字段：** 价格波动率（`volatility`）（0.60），成交量（`volume`）（0.30）" in card.markdown
    assert "- **建议：** 检查此时发生的变化；针对旧状态调优的内容（阈值、模型、策略）可能需要更新。" in card.markdown
    assert "- **一致的算法：** river.ADWIN 0.22.0，capymoa.ADWIN 0.15.1（2 个引擎交叉验证）" in card.markdown


def test_single_engine_findings_say_they_are_not_cross_validated(
    store: MemoryStore, cards: CardsConfig
) -> None:
    card, _ = card_for(store, "anomaly", "en", cards)
    assert "river.HalfSpaceTrees 0.22.0 only (not cross-validated)" in card.markdown
    assert card.cross_validated is False and [a.name for a in card.agreed] == ["river.HalfSpaceTrees"]
    assert card.summary == (
        "2026-01-05 10:41:30 UTC: anomaly on binance_spot; price +2.1%, trade count +45 trades. "
        "Most unusual fields: price (0.82), trade count (0.11)."
    )


def test_context_counts_only_the_patterns_sources(store: MemoryStore) -> None:
    context = load_context(store, PATTERNS["cluster_change"], 5)
    by_source = {s.source: s for s in context.sources}
    assert sorted(by_source) == ["binance_spot", "news"]  # the "weather" source is not part of it
    [headlines] = by_source["news"].lines
    assert (by_source["news"].events, headlines.phrase, headlines.values) == (1, "context_headlines", {"count": 1})
    assert headlines.examples == ["ETF approval talk, item 4"]
    [trades] = by_source["binance_spot"].lines
    assert trades.phrase == "context_trades"
    assert (trades.values["count"], trades.values["price_min"], trades.values["price_max"]) == (20, 42125.0, 42172.5)
    assert context.replay_command.endswith("--source binance_spot --source news")


def test_context_without_data_says_so(cards: CardsConfig) -> None:
    empty = MemoryStore()
    card = render_card(PATTERNS["anomaly"], load_context(empty, PATTERNS["anomaly"], 5), [], "en", cards)
    assert "  - no clean events in the window" in card.markdown


def _write_cards(tmp_path: Path, old: str, new: str) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    text = (REPO / "config" / "cards.yaml").read_text()
    assert old in text
    (folder / "cards.yaml").write_text(text.replace(old, new, 1))
    return folder


def test_a_template_naming_a_missing_field_is_rejected_with_template_and_field(tmp_path: Path) -> None:
    folder = _write_cards(tmp_path, "anomaly on {streams}", "anomaly of size {magnitude} on {streams}")
    with pytest.raises(ConfigError) as error:
        load_cards_config(folder)
    message = str(error.value)
    assert "cards.yaml: languages.en.types.anomaly.summary" in message
    assert "unknown field 'magnitude'" in message


def test_a_phrase_naming_another_phrases_field_is_rejected(tmp_path: Path) -> None:
    folder = _write_cards(tmp_path, '"{field}: {count} values', '"{field} of {source}: {count} values')
    with pytest.raises(ConfigError, match=r"languages\.en\.phrases\.context_field: .*'source'"):
        load_cards_config(folder)


def test_a_missing_pattern_type_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    text = (REPO / "config" / "cards.yaml").read_text()
    (folder / "cards.yaml").write_text(
        text.replace("      freq_pattern:\n        title: 频繁模式", "      x:\n        title: x")
    )
    with pytest.raises(ConfigError, match=r"languages\.zh\.types\.x"):
        load_cards_config(folder)


def test_configured_actions_replace_the_suggested_action(store: MemoryStore, cards: CardsConfig) -> None:
    custom = cards.with_actions({"anomaly": {"zh": "立即通知值班人员。"}})
    card, _ = card_for(store, "anomaly", "zh", custom)
    assert card.action == "立即通知值班人员。"
    assert card_for(store, "anomaly", "en", custom)[0].action == cards.language("en").types["anomaly"].action
    with pytest.raises(ConfigError, match=r"explain\.actions\.anomalie: unknown pattern type"):
        cards.with_actions({"anomalie": {"en": "x"}})
    with pytest.raises(ConfigError, match=r"explain\.actions\.anomaly\.en.*unknown field 'size'"):
        cards.with_actions({"anomaly": {"en": "act on {size}"}})


def test_annotations_appear_on_the_card(store: MemoryStore, cards: CardsConfig) -> None:
    pattern = PATTERNS["anomaly"]
    at = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    note = add_annotation(store, pattern.pattern_id, "false_alarm", "exchange maintenance", "ana", now=at)
    card = render_card(pattern, load_context(store, pattern, 5), [note], "zh", cards)
    assert "  - 误报，ana，2026-01-05T12:00:00.000Z：exchange maintenance" in card.markdown


def test_materialize_writes_both_languages_and_replaces_the_window(
    store: MemoryStore, cards: CardsConfig
) -> None:
    config = QraftConfig(explain=ExplainConfig(language="zh"))
    start, end = datetime(2026, 1, 5, 10, tzinfo=UTC), datetime(2026, 1, 5, 11, tzinfo=UTC)
    first = materialize_cards(store, config, cards, start, end)
    again = materialize_cards(store, config, cards, start, end)
    assert first["cards"] == again["cards"] == 8
    assert first["by_type"] == {"concept_drift": 1, "anomaly": 1, "cluster_change": 1, "freq_pattern": 1}
    assert first["llm_cards"] == 0
    preview = first["markdown"]
    assert isinstance(preview, list) and len(preview) == 3 and preview[0].startswith("### 概念漂移")
    rows = store.select("pattern_cards", order_by=("window_start", "lang"))
    assert rows.height == 8 and sorted(set(rows["lang"])) == ["en", "zh"] and set(rows["mode"]) == {"human"}
    # A window with fewer patterns keeps only its own cards.
    store.delete("pattern_events", [])
    assert materialize_cards(store, config, cards, start, end)["cards"] == 0
    assert store.count("pattern_cards") == {"": 0}


# Names a data set may hold: HTML, a terminal escape, a forged card line, a bidi override.
HOSTILE_STREAM = "m:<img src=x onerror=alert(1)>\x1b]0;pwned\x07"
HOSTILE_FIELD = "x\n- **Forged:** [c](javascript:alert(2))"
RTL_FIELD = "cpu\u202e"


def test_names_from_the_data_are_literal_text_on_the_card(cards: CardsConfig) -> None:
    anomaly = PATTERNS["anomaly"]
    pattern = anomaly.model_copy(update={
        "source_streams": [HOSTILE_STREAM],
        "details": anomaly.details.model_copy(update={
            "prev_state": "a`b", "new_state": "<b>|c|</b>",
            "metric_changes": {HOSTILE_FIELD: 45.0, RTL_FIELD: 2.5}, "metric_units": {}, "metrics": {},
        }),
        "explain": anomaly.explain.model_copy(update={"top_contributors": [
            Contributor(field=RTL_FIELD, score=0.82), Contributor(field=HOSTILE_FIELD, score=0.11),
        ]}),
    })
    line = ContextLine(phrase="context_field", examples=["line\nbreak [l](javascript:alert(5))"], values={
        "field": HOSTILE_FIELD, "count": 3, "min": 1.5, "max": 2.0, "first": 1.5, "last": 2.0,
    })
    context = ContextSummary(
        start=datetime(2026, 1, 5, 10, 36, tzinfo=UTC), end=datetime(2026, 1, 5, 10, 47, tzinfo=UTC), minutes=5,
        replay_command="qraft replay", sources=[
            SourceContext(source=HOSTILE_STREAM, events=3, before=1, after=2, types={}, lines=[line]),
        ],
    )
    stream = r"m:\<img src=x onerror=alert(1)\>\x1b\]0;pwned\x07"
    field = r"x\n- \*\*Forged:\*\* \[c\](javascript:alert(2))"
    pid = pattern.pattern_id
    assert render_card(pattern, context, [], "en", cards).markdown == "\n".join([
        "### Anomaly · 2026-01-05 10:41:30 UTC",
        "",
        f"2026-01-05 10:41:30 UTC: anomaly on {stream}; cpu\\u202e +2.5, {field} +45. "
        f"Most unusual fields: cpu\\u202e (0.82), {field} (0.11).",
        "",
        r"- **What changed:** a\`b → \<b\>\|c\|\</b\> (in the detector's own words)",
        f"- **By how much:** cpu\\u202e +2.5, {field} +45",
        f"- **Top contributing fields:** cpu\\u202e (0.82), {field} (0.11)",
        "- **Confidence:** 0.93",
        "- **Algorithms that agreed:** river.HalfSpaceTrees 0.22.0 only (not cross-validated)",
        "- **Suggested action:** Check the source for bad data or an outage before acting; "
        "confirm or mark as a false alarm.",
        '- **Algorithm:** river.HalfSpaceTrees 0.22.0 `{"height": 8, "n_trees": 25, "seed": 42, "window_size": 250}`',
        "- **Clean-data context:** 2026-01-05 10:36 to 2026-01-05 10:47 UTC, 5 min either side",
        f"  - {stream}: 3 events (1 before, 2 after)",
        f"  - {field}: 3 values, 1.5 to 2 (first 1.5, last 2)",
        r"    - “line\nbreak \[l\](javascript:alert(5))”",
        f"  - full rows: GET /pattern/{pid}/context",
        "- **Reproduce:** `qraft replay`",
        f"- **Annotations:** none yet (POST /pattern/{pid}/annotations)",
        f"- **Pattern id:** `{pid}`",
    ])


def test_a_unit_from_the_data_is_literal_text_on_the_card(cards: CardsConfig) -> None:
    anomaly = PATTERNS["anomaly"]
    pattern = anomaly.model_copy(update={"details": anomaly.details.model_copy(update={
        "metric_changes": {"latency": 2.5}, "metric_units": {"latency": "<u>ms</u>"}, "metrics": {},
    })})
    context = ContextSummary(start=pattern.timestamp, end=pattern.timestamp, minutes=5, replay_command="qraft replay",
                             sources=[])
    markdown = render_card(pattern, context, [], "en", cards).markdown
    assert r"latency +2.5 \<u\>ms\</u\>" in markdown
    assert "<u>" not in markdown


def test_annotation_author_and_note_are_literal_text_on_the_card(store: MemoryStore, cards: CardsConfig) -> None:
    pattern = PATTERNS["anomaly"]
    note = add_annotation(store, pattern.pattern_id, "note", "see [x](javascript:alert(3))\n- **Forged:** y",
                          "<img src=x>", now=datetime(2026, 1, 6, 9, 0, tzinfo=UTC))
    markdown = render_card(pattern, load_context(store, pattern, 5), [note], "en", cards).markdown
    assert markdown.splitlines()[-2] == (
        r"  - note by \<img src=x\> at 2026-01-06T09:00:00.000Z: see \[x\](javascript:alert(3)) - \*\*Forged:\*\* y"
    )
