"""Operators, the preprocessing config and the features computation on hand-made data."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from qraft_core.config import ConfigError
from qraft_core.features import load_features, materialize_features
from qraft_core.operators import (
    OPERATORS,
    Operator,
    OperatorContext,
    OperatorError,
    StatefulOperator,
    build_operator,
    load_preprocessing,
)
from qraft_core.operators.base import BaseOperator, OperatorParams
from qraft_core.operators.derive import DeriveError, parse_expression
from qraft_core.operators.pipeline import PreprocessingConfig
from qraft_core.store.fake import MemoryStore

T0 = datetime(2026, 1, 5, tzinfo=UTC)
CONTEXT = OperatorContext("binance_spot", 10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trades(rows: list[tuple[str, float, object, object, bool]]) -> pl.DataFrame:
    """(stream, seconds after T0, price, qty, buyer_is_maker) → event rows."""
    return pl.DataFrame(
        {
            "stream": [r[0] for r in rows],
            "event_id": [f"e{i:03d}" for i in range(len(rows))],
            "timestamp": [at(r[1]) for r in rows],
            "payload": [json.dumps({"p": r[2], "q": r[3], "m": r[4]}) for r in rows],
        }
    )


def bars(stream: str, values: dict[str, list[float]], step_s: int = 10) -> pl.DataFrame:
    n = len(next(iter(values.values())))
    return pl.DataFrame({"stream": [stream] * n, "bar_time": [at(step_s * i) for i in range(n)], **values})


def test_every_builtin_operator_meets_the_protocol_it_declares() -> None:
    params = {
        "aggregate": {},
        "derive": {"columns": {"r": "close / prev(close)"}},
        "normalize": {"fields": ["v"]},
        "text_clean": {},
        "keyword_extract": {"topk": 3},
        "join": {"source": "news", "columns": ["c"]},
    }
    assert sorted(OPERATORS) == sorted(params)
    for name, given in params.items():
        operator = build_operator(name, given)
        assert isinstance(operator, Operator), name
        assert isinstance(operator, StatefulOperator) == operator.stateful, name
        assert operator.params == given and operator.params is not given, name
    assert [n for n in sorted(params) if OPERATORS[n].stateful] == ["derive", "normalize"]


# -- aggregate ----------------------------------------------------------------


def test_aggregate_ohlcv_of_two_bars_and_two_streams() -> None:
    frame = trades(
        [
            ("x:A", 1.0, "100", "1", False),
            ("x:A", 2.0, "110", "3", True),
            ("x:A", 5.0, "105", "2", False),
            ("x:B", 3.0, "10", "4", True),
            ("x:A", 12.0, "108", "1", True),
        ]
    )
    result = build_operator("aggregate", {"method": "ohlcv"}).apply(frame, CONTEXT)
    got = result.select(
        "stream", "bar_time", "event_count", "open", "high", "low", "close", "volume", "vwap", "buy_ratio"
    ).rows()
    assert got == [
        ("x:A", at(0), 3, 100.0, 110.0, 100.0, 105.0, 6.0, (100 + 330 + 210) / 6, 3 / 6),
        ("x:A", at(10), 1, 108.0, 108.0, 108.0, 108.0, 1.0, 108.0, 0.0),
        ("x:B", at(0), 1, 10.0, 10.0, 10.0, 10.0, 4.0, 10.0, 0.0),
    ]
    first = result.row(0, named=True)
    assert first["trade_count"] == 3.0
    assert first["mean_size"] == 2.0
    assert first["imbalance"] == 0.0
    assert first["realized_vol"] == pytest.approx(math.sqrt(math.log(1.1) ** 2 + math.log(105 / 110) ** 2))
    assert result.row(1, named=True)["realized_vol"] == 0.0


def test_aggregate_drops_and_counts_unusable_trades() -> None:
    frame = trades(
        [
            ("x:A", 1.0, "100", "1", False),
            ("x:A", 2.0, "n/a", "1", False),
            ("x:A", 3.0, "-5", "1", False),
            ("x:A", 4.0, "101", "0", False),
        ]
    )
    context = OperatorContext("x", 10)
    result = build_operator("aggregate", {"method": "ohlcv"}).apply(frame, context)
    assert result["event_count"].to_list() == [1]
    assert context.dropped == {"aggregate: no positive finite price and quantity": 3}


# -- normalize ----------------------------------------------------------------


def test_zscore_uses_the_trailing_window_without_the_current_bar() -> None:
    frame = bars("s", {"v": [1.0, 2.0, 3.0, 4.0, 10.0]})
    op = build_operator("normalize", {"fields": ["v"], "window": 3, "min_periods": 3})
    # bar 3: window [1, 2, 3] → (4 - 2) / 1; bar 4: window [2, 3, 4] → (10 - 3) / 1.
    assert op.apply(frame, CONTEXT)["v_z"].to_list() == [0.0, 0.0, 0.0, 2.0, 7.0]


def test_minmax_and_flat_windows() -> None:
    frame = bars("s", {"v": [2.0, 4.0, 3.0, 5.0, 5.0, 5.0, 5.0]})
    op = build_operator("normalize", {"fields": ["v"], "method": "minmax", "window": 2, "min_periods": 2})
    # windows: -, [2], [2,4], [4,3], [3,5], [5,5] (no spread → 0), [5,5].
    assert op.apply(frame, CONTEXT)["v_mm"].to_list() == [0.0, 0.0, 0.5, 2.0, 1.0, 0.0, 0.0]


def test_normalize_gives_the_same_values_when_a_range_is_split() -> None:
    values = [1.0, 4.0, 2.0, 8.0, 5.0, 7.0, 3.0, 9.0, 6.0, 0.5]
    frame = bars("s", {"v": values})
    params = {"fields": ["v"], "window": 4, "min_periods": 2}
    whole = build_operator("normalize", params).apply(frame, CONTEXT)
    first = build_operator("normalize", params)
    head = first.apply(frame.head(6), CONTEXT)
    # The state crosses a process boundary as plain data.
    resumed = type(first).from_state(params, json.loads(json.dumps(first.get_state())))
    tail = resumed.apply(frame.tail(4), CONTEXT)
    assert_frame_equal(pl.concat([head, tail]), whole, check_exact=True)


def test_normalize_rejects_bad_parameters() -> None:
    with pytest.raises(OperatorError, match="normalize: window: Input should be greater than or equal to 2"):
        build_operator("normalize", {"fields": ["v"], "window": 1})
    with pytest.raises(OperatorError, match="normalize: colour: an unknown parameter"):
        build_operator("normalize", {"fields": ["v"], "colour": "red"})


# -- derive -------------------------------------------------------------------


def test_derive_computes_returns_spreads_and_chains() -> None:
    frame = bars(
        "s", {"close": [100.0, 110.0, 99.0], "high": [101.0, 112.0, 100.0], "low": [99.0, 108.0, 98.0]}
    )
    op = build_operator(
        "derive",
        {
            "columns": {
                "ret": "close / prev(close) - 1",
                "spread": "(high - low) * 2 / -(-close)",
                "abs_ret": "abs(ret)",
            }
        },
    )
    result = op.apply(frame, CONTEXT)
    assert result["ret"].to_list() == pytest.approx([0.0, 0.1, -0.1])
    assert result["spread"].to_list() == pytest.approx([0.04, 8 / 110, 4 / 99])
    assert result["abs_ret"].to_list() == pytest.approx([0.0, 0.1, 0.1])


def test_prev_stops_at_max_gap_and_undefined_values_are_zero() -> None:
    frame = pl.DataFrame(
        {"stream": ["s"] * 3, "bar_time": [at(0), at(10), at(40)], "close": [100.0, 0.0, 50.0]}
    )
    op = build_operator("derive", {"columns": {"lr": "log(close / prev(close))"}, "max_gap_bars": 2})
    # bar 1: log(0) is undefined; bar 2 is 3 bars after bar 1, beyond the gap.
    assert op.apply(frame, CONTEXT)["lr"].to_list() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__(close)", "unknown function '__import__'"),
        ("__import__('os').system('true')", 'unexpected character "\'"'),
        ("close.__class__", "unexpected character '.'"),
        ("eval(close)", "unknown function 'eval'"),
        ("close +", "ends too early"),
        ("(close", "ends too early"),
        ("close close", "unexpected 'close'"),
        ("close; 1", "unexpected character ';'"),
    ],
)
def test_derive_grammar_rejects_everything_else(text: str, message: str) -> None:
    with pytest.raises(DeriveError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_expression(text)


def test_derive_rejects_reserved_output_names() -> None:
    with pytest.raises(OperatorError, match="'stream' cannot be a column name"):
        build_operator("derive", {"columns": {"stream": "close"}})


# -- text ---------------------------------------------------------------------


def test_text_clean_and_keyword_extract_top_k() -> None:
    headlines = [
        (1.0, "ETF approval: ETF inflows surge! https://example.com/x"),
        (2.0, "The approval of the ETF is near"),
        (3.0, "Miners, miners and 2026 outlook"),
        (14.0, "Quiet session for the dollar"),
    ]
    events = pl.DataFrame(
        {
            "stream": ["news"] * len(headlines),
            "event_id": [str(i) for i in range(len(headlines))],
            "timestamp": [at(s) for s, _ in headlines],
            "payload": [json.dumps({"headline": h}) for _, h in headlines],
        }
    )
    context = OperatorContext("news", 10)
    cleaned = build_operator("text_clean").apply(events, context)
    assert cleaned["text"][0] == "etf approval etf inflows surge"
    result = build_operator("keyword_extract", {"topk": 3, "extra_stopwords": ["Quiet"]}).apply(
        cleaned, context
    )
    # bar 0: etf ×3, approval ×2, miners ×2 (tie broken alphabetically), then inflows, near, outlook, surge.
    assert result.select("bar_time", "items", "headline_count", "event_count").rows() == [
        (at(0), ["etf", "approval", "miners"], 3.0, 3),
        (at(10), ["dollar", "session"], 1.0, 1),
    ]


def test_join_puts_the_other_streams_bar_beside_and_fills_gaps() -> None:
    news = pl.DataFrame({"stream": ["news"], "bar_time": [at(10)], "headline_count": [2.0]})
    trade_bars = bars("x:A", {"close": [1.0, 2.0, 3.0]})
    op = build_operator("join", {"source": "news", "columns": ["headline_count"], "prefix": "n_", "fill": -1})
    result = op.apply(trade_bars, OperatorContext("x", 10, bars={"news": news}))
    assert result["n_headline_count"].to_list() == [-1.0, 2.0, -1.0]


# -- configuration --------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "preprocessing.yaml").write_text(text)
    return tmp_path


def test_bundled_config_loads_with_the_contract_features() -> None:
    config = load_preprocessing(Path(__file__).resolve().parents[2] / "config")
    assert config.bar_seconds == 10
    assert [p.source for p in config.ordered()] == ["news", "binance_spot"]
    assert config.lookback_seconds() == 600


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "preprocessing:\n  bar_second: 5\n",
            "preprocessing.yaml: preprocessing.bar_second: an unknown key (check the spelling)",
        ),
        (
            "preprocessing:\n  pipeline_by_source:\n    - source: s\n      operators: [sharpen]\n",
            "preprocessing.pipeline_by_source[0].operators: Value error, "
            "operators[0]: unknown operator 'sharpen'",
        ),
        (
            "preprocessing:\n  pipeline_by_source:\n    - source: s\n"
            "      operators: [{normalize: {fields: [v], window: -3}}]\n",
            "operators[0]: normalize: window: Input should be greater than or equal to 2",
        ),
        (
            "preprocessing:\n  pipeline_by_source:\n    - source: s\n"
            "      operators: [aggregate, {join: {source: news, columns: [c]}}]\n",
            "join reads source 'news', which has no pipeline",
        ),
        (
            "preprocessing:\n  pipeline_by_source:\n"
            "    - {source: a, operators: [aggregate, {join: {source: b, columns: [c]}}]}\n"
            "    - {source: b, operators: [aggregate, {join: {source: a, columns: [c]}}]}\n",
            "joins form a cycle: a → b → a",
        ),
        (
            # The universal cleaning steps always run (the clean step); naming them was decorative.
            "preprocessing:\n  default: [validate_schema]\n",
            "preprocessing.default: an unknown key (check the spelling)",
        ),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_preprocessing(write_config(tmp_path, text))
    assert message in str(error.value)
    assert str(tmp_path / "preprocessing.yaml") in str(error.value)


# -- features -------------------------------------------------------------------

SMALL_CONFIG = PreprocessingConfig.model_validate(
    {
        "bar_seconds": 10,
        "pipeline_by_source": [
            {"source": "news", "operators": ["text_clean", {"keyword_extract": {"topk": 2}}]},
            {
                "source": "binance_spot",
                "stream_key": "s",
                "operators": [
                    {"aggregate": {"method": "ohlcv"}},
                    {"derive": {"columns": {"log_return": "log(close / prev(close))"}}},
                    {"normalize": {"fields": ["volume"], "window": 3, "min_periods": 2}},
                    {"join": {"source": "news", "columns": ["headline_count"]}},
                ],
            },
        ],
    }
)


def clean_rows(rows: list[tuple[str, str, float, dict[str, object]]]) -> pl.DataFrame:
    """(source, type, seconds after T0, payload) → clean_events rows."""
    ms = pl.Datetime("ms", "UTC")
    return pl.DataFrame(
        {
            "event_id": [f"{r[0]}:{i}" for i, r in enumerate(rows)],
            "source": [r[0] for r in rows],
            "type": [r[1] for r in rows],
            "timestamp": [at(r[2]) for r in rows],
            "ingest_time": [at(r[2]) for r in rows],
            "window_start": [T0 for _ in rows],
            "payload": [json.dumps(r[3]) for r in rows],
            "repaired": [0 for _ in rows],
        },
        schema_overrides={"timestamp": ms, "ingest_time": ms, "window_start": ms},
    )


def test_features_wide_frame_on_a_memory_store(memory_store: MemoryStore) -> None:
    volumes = [1.0, 1.0, 3.0, 1.0, 9.0, 1.0]
    rows = [
        ("binance_spot", "trade", 10.0 * i + 1, {"s": "BTC", "p": 100.0 + i, "q": v, "m": False})
        for i, v in enumerate(volumes)
    ]
    rows += [
        ("news", "headline", 42.0, {"headline": "ETF approval nears"}),
        ("binance_spot", "trade", 5.0, {"s": "ETH", "p": 10.0, "q": 2.0, "m": True}),
    ]
    memory_store.insert("clean_events", clean_rows(rows))
    meta = materialize_features(
        memory_store, SMALL_CONFIG, T0, T0 + timedelta(minutes=2), timedelta(minutes=1)
    )
    assert meta == {
        "rows": 8,
        "streams": ["binance_spot:BTC", "binance_spot:ETH", "news"],
        "windows": 2,
        "events": 8,
        "dropped_events": 0,
        "failed_sources": {},
        "bars_outside_range": {},
    }
    wide = load_features(memory_store, T0, T0 + timedelta(minutes=2))
    assert wide.columns[:4] == ["window_start", "bar_time", "stream", "event_count"]
    assert wide.columns[-1] == "items"
    assert wide.schema["items"] == pl.List(pl.Utf8)
    btc = wide.filter(pl.col("stream") == "binance_spot:BTC")
    assert btc["close"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    assert btc["log_return"].to_list() == pytest.approx(
        [0.0, *(math.log((101 + i) / (100 + i)) for i in range(5))]
    )
    # volume_z: bar 2 → window [1, 1] has no spread; bar 4 → window [1, 3, 1]: (9 - 5/3) / std.
    std = math.sqrt(((1 - 5 / 3) ** 2 * 2 + (3 - 5 / 3) ** 2) / 2)
    assert btc["volume_z"].to_list() == pytest.approx(
        [
            0.0,
            0.0,
            0.0,
            (1 - 5 / 3) / std,
            (9 - 5 / 3) / std,
            (1 - 13 / 3) / math.sqrt(((3 - 13 / 3) ** 2 + (1 - 13 / 3) ** 2 + (9 - 13 / 3) ** 2) / 2),
        ]
    )
    assert btc["news_headline_count"].to_list() == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    news = wide.filter(pl.col("stream") == "news").row(0, named=True)
    assert (news["bar_time"], news["items"], news["headline_count"], news["close"]) == (
        at(40),
        ["approval", "etf"],
        1.0,
        None,
    )
    assert wide.filter(pl.col("stream") == "binance_spot:ETH")["buy_ratio"].to_list() == [0.0]


def test_features_reject_ranges_off_the_bar_grid(memory_store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="not a multiple of bar_seconds"):
        materialize_features(memory_store, SMALL_CONFIG, T0, at(60), timedelta(seconds=15))
    with pytest.raises(ValueError, match="bar boundaries"):
        materialize_features(memory_store, SMALL_CONFIG, at(5), at(65), timedelta(minutes=1))


def test_empty_range_writes_nothing(memory_store: MemoryStore) -> None:
    meta = materialize_features(memory_store, SMALL_CONFIG, T0, at(120), timedelta(minutes=1))
    assert meta == {"rows": 0, "streams": [], "windows": 2, "events": 0, "dropped_events": 0,
                    "failed_sources": {}, "bars_outside_range": {}}
    empty = load_features(memory_store, T0, at(120))
    assert empty.columns == ["window_start", "bar_time", "stream", "event_count", "items"]


def test_windows_with_gaps_give_the_same_rows_one_by_one(memory_store: MemoryStore) -> None:
    # Trades in minutes 0 and 2 only, news in minute 1 only.
    rows: list[tuple[str, str, float, dict[str, object]]] = [
        ("binance_spot", "trade", s, {"s": "BTC", "p": 100.0 + s % 7, "q": 1.0 + s % 3, "m": s % 2 == 0})
        for s in [*range(0, 60, 4), *range(121, 180, 5)]
    ]
    rows.append(("news", "headline", 75.0, {"headline": "Quiet markets"}))
    memory_store.insert("clean_events", clean_rows(rows))
    other = MemoryStore()
    other.insert("clean_events", clean_rows(rows))
    materialize_features(memory_store, SMALL_CONFIG, T0, at(180), timedelta(minutes=1))
    for minute in range(3):
        materialize_features(other, SMALL_CONFIG, at(60 * minute), at(60 * minute + 60), timedelta(minutes=1))
    whole = load_features(memory_store, T0, at(180))
    assert whole.height == 6 + 6 + 1  # bars: 6 per minute with trades, 1 of news
    assert_frame_equal(load_features(other, T0, at(180)), whole, check_exact=True)
    # The first bar after the silent minute is more than max_gap_bars after the last one.
    after_gap = whole.filter(pl.col("bar_time") == at(120), pl.col("stream") == "binance_spot:BTC")
    assert after_gap["log_return"].item() == 0.0


class HostileParams(OperatorParams):
    mode: str = "raise"


class HostileOperator(BaseOperator[HostileParams]):
    """A user's operator that raises, or moves every bar a day later."""

    name: ClassVar[str] = "hostile_op"
    params_model: ClassVar[type[OperatorParams]] = HostileParams

    def apply(self, frame: pl.DataFrame, context: OperatorContext) -> pl.DataFrame:
        if self.options.mode == "raise":
            raise RuntimeError("exploded")
        return frame.with_columns(pl.col("bar_time") + pl.duration(days=1))


def hostile_features(store: MemoryStore, monkeypatch: pytest.MonkeyPatch, mode: str) -> dict[str, object]:
    """Two minutes of trades and a headline, with the hostile operator last in binance_spot's chain."""
    monkeypatch.setitem(OPERATORS._items, "hostile_op", HostileOperator)
    config = SMALL_CONFIG.model_dump()
    config["pipeline_by_source"][1]["operators"].append({"hostile_op": {"mode": mode}})
    rows = [("binance_spot", "trade", 10.0 * i + 1, {"s": "BTC", "p": 100.0 + i, "q": 1.0, "m": False})
            for i in range(12)]
    store.insert("clean_events", clean_rows([*rows, ("news", "headline", 42.0, {"headline": "ETF approval nears"})]))
    return materialize_features(store, PreprocessingConfig.model_validate(config), T0, at(120), timedelta(minutes=1))


def test_an_operator_raising_on_one_source_leaves_the_other_sources_bars(
    memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    meta = hostile_features(memory_store, monkeypatch, "raise")
    assert meta["failed_sources"] == {"binance_spot": "operator hostile_op: RuntimeError: exploded"}
    assert meta["streams"] == ["news"] and meta["rows"] == 1
    assert "features of source binance_spot failed on windows [2026-01-05T00:00:00.000Z, " \
           "2026-01-05T00:02:00.000Z): operator hostile_op: RuntimeError: exploded; it has no bars there, " \
           "the other sources go on" in caplog.text


def test_bars_an_operator_dates_outside_the_range_are_dropped_and_counted(
    memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    meta = hostile_features(memory_store, monkeypatch, "shift")
    assert meta["bars_outside_range"] == {"binance_spot": 12} and meta["failed_sources"] == {}
    assert memory_store.select("features")["stream"].to_list() == ["news"]
    assert "features of source binance_spot: 12 bar(s) dated outside windows [2026-01-05T00:00:00.000Z, " \
           "2026-01-05T00:02:00.000Z) were dropped (an operator moved bar_time)" in caplog.text
