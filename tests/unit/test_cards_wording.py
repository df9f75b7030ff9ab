"""Cards that do not mislead: every merged detector named, one naming, levels instead of scores of
scores, the headlines a frequent itemset is about, Chinese cards in Chinese, generic streams in their
own words."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from qraft_core.events import (
    AlgorithmInfo,
    Contributor,
    PatternDetails,
    PatternEvent,
    PatternExplain,
)
from qraft_core.explain import load_cards_config, load_context, render_card
from qraft_core.explain.templates import CardsConfig
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cards() -> CardsConfig:
    return load_cards_config(REPO / "config")


def pattern(
    stream: str,
    *,
    kind: str = "anomaly",
    details: dict[str, object] | None = None,
    contributors: tuple[tuple[str, float], ...] = (),
    algorithms: tuple[AlgorithmInfo, ...] = (AlgorithmInfo(name="qraft.CalibratedAnomaly", version="1"),),
    cross_validated: bool = False,
) -> PatternEvent:
    return PatternEvent(
        pattern_id=f"p-{kind}",
        type=kind,
        timestamp=T0 + timedelta(minutes=30),
        window_start=T0 + timedelta(minutes=30),
        source_streams=[stream],
        details=PatternDetails.model_validate(details or {}),
        explain=PatternExplain(top_contributors=[Contributor(field=f, score=s) for f, s in contributors]),
        algorithm=algorithms[0],
        algorithms=list(algorithms),
        cross_validated=cross_validated,
        confidence=0.9,
    )


def clean_rows(source: str, kind: str, payloads: list[dict[str, object]]) -> pl.DataFrame:
    times = [T0 + timedelta(minutes=27, seconds=20 * i) for i in range(len(payloads))]
    return pl.DataFrame(
        {
            "event_id": [f"{source}-{i}" for i in range(len(payloads))],
            "source": [source] * len(payloads),
            "type": [kind] * len(payloads),
            "timestamp": times,
            "ingest_time": times,
            "window_start": [t.replace(second=0) for t in times],
            "payload": [json.dumps(p) for p in payloads],
            "repaired": [0] * len(payloads),
        },
        schema_overrides={c: pl.Datetime("ms", "UTC") for c in ("timestamp", "ingest_time", "window_start")},
    )


def card_markdown(p: PatternEvent, lang: str, cards: CardsConfig, store: MemoryStore | None = None) -> str:
    store = store or MemoryStore()
    return render_card(p, load_context(store, p, 5), [], lang, cards).markdown


def section(markdown: str, heading: str) -> str:
    [line] = [line for line in markdown.splitlines() if line.startswith(f"- **{heading}")]
    return line


ZSCORE = AlgorithmInfo(name="qraft.RobustZScore", version="1", params={"detector": "z"})
HST = AlgorithmInfo(name="river.HalfSpaceTrees", version="0.22.0", params={"detector": "hst"})


def test_every_detector_merged_into_a_finding_is_listed(cards: CardsConfig) -> None:
    both = pattern("cpu", algorithms=(ZSCORE, HST))
    assert section(card_markdown(both, "en", cards), "Algorithms that agreed") == (
        "- **Algorithms that agreed:** qraft.RobustZScore 1, river.HalfSpaceTrees 0.22.0 "
        "(2 detectors of one engine, not cross-validated)"
    )
    assert section(card_markdown(both, "zh", cards), "一致的算法") == (
        "- **一致的算法：** qraft.RobustZScore 1，river.HalfSpaceTrees 0.22.0（同一引擎的 2 个检测器，未交叉验证）"
    )
    alone = pattern("cpu", algorithms=(ZSCORE,))
    assert section(card_markdown(alone, "en", cards), "Algorithms that agreed") == (
        "- **Algorithms that agreed:** qraft.RobustZScore 1 only (not cross-validated)"
    )
    cross = pattern("cpu", algorithms=(HST, AlgorithmInfo(name="capymoa.HalfSpaceTrees", version="0.15.1")),
                    cross_validated=True)
    assert section(card_markdown(cross, "en", cards), "Algorithms that agreed") == (
        "- **Algorithms that agreed:** river.HalfSpaceTrees 0.22.0, capymoa.HalfSpaceTrees 0.15.1 "
        "(cross-validated by 2 engines)"
    )


DRIFT = {
    "prev_state": "realized_vol_z ≈ 0.1", "new_state": "realized_vol_z ≈ 2.4",
    "metric_changes": {"volatility": 1.5, "buy_ratio": 4.5},
    "metric_units": {"volatility": "relative", "buy_ratio": "pp"},
    "metrics": {"volatility_before": 0.0004, "volatility_after": 0.001, "buy_ratio_before": 0.45,
                "buy_ratio_after": 0.495},
}


def test_one_naming_with_levels_before_and_after_in_english(cards: CardsConfig) -> None:
    drift = pattern("binance_spot:BTCUSDT", kind="concept_drift", details=DRIFT,
                    contributors=(("realized_vol_z", 0.7), ("volume", 0.3)))
    markdown = card_markdown(drift, "en", cards)
    # Every field by its display name, the raw name beside it; a z-score feature is called one,
    # and its change is stated as levels of the metric in the stream's own units, not re-scored.
    assert section(markdown, "By how much") == (
        "- **By how much:** buyer share (`buy_ratio`) 0.45 → 0.495 (+4.5 pp), "
        "price volatility (`volatility`) 0.0004 → 0.001 (+150%)"
    )
    assert section(markdown, "Top contributing fields") == (
        "- **Top contributing fields:** realized volatility z-score (`realized_vol_z`) (0.70), "
        "trade volume (`volume`) (0.30)"
    )
    assert (
        "buyer share +4.5 pp, price volatility +150%. Main drivers: realized volatility z-score (0.70), "
        "trade volume (0.30)." in markdown
    )


def test_chinese_cards_have_every_fixed_phrase_label_and_unit_in_chinese(cards: CardsConfig) -> None:
    drift = pattern("binance_spot:BTCUSDT", kind="concept_drift", details=DRIFT,
                    contributors=(("realized_vol_z", 0.7), ("volume", 0.3)))
    markdown = card_markdown(drift, "zh", cards)
    assert section(markdown, "变化幅度") == (
        "- **变化幅度：** 主动买入占比（`buy_ratio`） 0.45 → 0.495（+4.5 个百分点），"
        "价格波动率（`volatility`） 0.0004 → 0.001（+150%）"
    )
    assert section(markdown, "主要驱动字段") == (
        "- **主要驱动字段：** 已实现波动率 z 分数（`realized_vol_z`）（0.70），成交量（`volume`）（0.30）"
    )
    # What is left in Latin letters is data: field names, the detector's own words, names of
    # streams and algorithms, JSON parameters, the API paths, the time zone, and the two
    # terms Chinese writes in Latin letters ("z 分数", "ID").
    rest = markdown
    for data in (DRIFT["prev_state"], DRIFT["new_state"], "binance_spot:BTCUSDT", "qraft.CalibratedAnomaly"):
        rest = rest.replace(str(data), "")
    rest = re.sub(r"`[^`]*`|(GET|POST) \S+|UTC|z 分数|模式 ID", "", rest)
    assert re.findall(r"[A-Za-z]+", rest) == []


HEADLINES = [
    "Exchange outage halts trading",
    "SEC weighs ETF approval for spot bitcoin",
    "Miners sell after the halving",
    "ETF approval lifts crypto sentiment",
    "Stablecoin supply grows",
    "Analysts doubt an approval of the ETF this year",
]


def test_a_frequent_pattern_card_shows_the_headlines_holding_its_terms(cards: CardsConfig) -> None:
    store = MemoryStore()
    store.insert("clean_events", clean_rows("news", "headline", [{"headline": h} for h in HEADLINES]))
    itemset = pattern("news", kind="freq_pattern", details={"itemset": ["approval", "etf"]},
                      contributors=(("approval", 0.5), ("etf", 0.5)))
    assert "\n".join(card_markdown(itemset, "en", cards, store).splitlines()[12:18]) == (
        "  - news: 6 events (6 before, 0 after)\n"
        "  - 6 headlines, 3 of them containing approval & etf\n"
        "    - “SEC weighs ETF approval for spot bitcoin”\n"
        "    - “ETF approval lifts crypto sentiment”\n"
        "    - “Analysts doubt an approval of the ETF this year”\n"
        "  - full rows: GET /pattern/p-freq_pattern/context"
    )
    assert "  - 6 条新闻标题，其中 3 条包含 approval & etf\n    - “SEC weighs ETF approval for spot bitcoin”" in (
        card_markdown(itemset, "zh", cards, store))
    # Without an itemset (any other finding), the first titles are the samples.
    other = pattern("news", contributors=(("headline_count", 1.0),))
    context = load_context(store, other, 5)
    assert context.sources[0].lines[0].examples == HEADLINES[:3]


def test_a_generic_stream_card_speaks_of_its_own_fields(cards: CardsConfig) -> None:
    store = MemoryStore()
    store.insert("clean_events", clean_rows("sensor", "reading", [{"value": 20.0 + i} for i in range(6)]))
    drift = pattern(
        "sensor", kind="concept_drift", contributors=(("value_mean", 1.0),),
        algorithms=(AlgorithmInfo(name="qraft.CalibratedDrift", version="1"),),
        details={"metric_changes": {"value": 4.12776}, "metric_units": {"value": "delta"},
                 "metrics": {"value_before": 20.1, "value_after": 24.22776}},
    )
    markdown = card_markdown(drift, "en", cards, store)
    assert section(markdown, "By how much") == "- **By how much:** value 20.1 → 24.2278 (+4.12776)"
    assert section(markdown, "Top contributing fields") == (
        "- **Top contributing fields:** bar mean of value (`value_mean`) (1.00)")
    assert "Main drivers: bar mean of value (1.00)." in markdown
    assert "  - value: 6 values, 20 to 25 (first 20, last 25)" in markdown
    assert re.findall(r"trade|price|volatil|headline|volume|market", markdown, re.IGNORECASE) == []
    chinese = card_markdown(drift, "zh", cards, store)
    assert section(chinese, "主要驱动字段") == "- **主要驱动字段：** value 区间均值（`value_mean`）（1.00）"
    assert re.findall(r"成交|价格|新闻", chinese) == []
