"""Generic streams: per-field bar statistics, numbers of any sign, old data, per-source bars,
metric changes and cards that speak of the stream's own fields."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from qraft_core.clean import clean_frame, rejection_counts
from qraft_core.config import CleanConfig
from qraft_core.events import AlgorithmInfo, PatternDetails, PatternEvent, PatternExplain
from qraft_core.explain import load_cards_config, render_card
from qraft_core.explain.context import summarise_context
from qraft_core.features import compute_bars
from qraft_core.operators import OperatorContext, OperatorError, build_operator
from qraft_core.operators.pipeline import PreprocessingConfig
from qraft_core.patterns.materialize import metric_changes

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2014, 3, 1, tzinfo=UTC)
MS = pl.Datetime("ms", "UTC")
MARKET_WORDS = ("trade", "price", "volume", "buy_ratio", "volatility", "headline", "成交", "价格")


def events(values: list[object], step_s: int = 60, stream: str = "cpu", extra: dict | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "stream": [stream] * len(values),
            "event_id": [f"e{i:05d}" for i in range(len(values))],
            "source": [stream] * len(values),
            "type": ["record"] * len(values),
            "timestamp": [T0 + timedelta(seconds=step_s * i) for i in range(len(values))],
            "payload": [json.dumps({"timestamp": "x", "value": v, **(extra or {})}) for v in values],
        },
        schema_overrides={"timestamp": MS},
    )


def test_stats_aggregate_gives_exact_per_field_statistics_of_any_sign() -> None:
    frame = events(["-3", "0", 1.5, "-0.5", "2", "nan"], step_s=100)  # bars of 300 s: 3 events each
    bars = build_operator("aggregate", {"stats": ["count", "sum", "mean", "min", "max", "first", "last", "std"],
                                        "quantiles": [0.5]}).apply(frame, OperatorContext("cpu", 300))
    first, second = bars.rows(named=True)
    assert first["bar_time"] == T0 and second["bar_time"] == T0 + timedelta(seconds=300)
    assert (first["event_count"], first["value_count"], first["value_sum"]) == (3, 3.0, -1.5)
    assert (first["value_mean"], first["value_min"], first["value_max"]) == (-0.5, -3.0, 1.5)
    assert (first["value_first"], first["value_last"], first["value_p50"]) == (-3.0, 1.5, 0.0)
    assert first["value_std"] == pytest.approx(math.sqrt(((-2.5) ** 2 + 0.5**2 + 2**2) / 3))
    # "nan" is not a number: the event counts, its value is left out.
    assert (second["event_count"], second["value_count"], second["value_mean"]) == (3, 2.0, 0.75)
    assert second["value_std"] == 1.25
    assert "timestamp_mean" not in bars.columns  # ISO text is not numeric


def test_default_stats_on_seeded_data_match_numpy_and_one_value_bars_have_zero_spread() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(-5, 2, 600).round(4).tolist()
    bars = build_operator("aggregate").apply(events(values, step_s=10), OperatorContext("cpu", 60))
    assert [c for c in bars.columns if c.startswith("value_")] == [
        "value_mean", "value_min", "value_max", "value_last", "value_std"
    ]
    assert bars.height == 100
    for index in (0, 57, 99):
        chunk = np.array(values[6 * index: 6 * index + 6])
        row = bars.row(index, named=True)
        assert row["value_mean"] == pytest.approx(chunk.mean())
        assert row["value_std"] == pytest.approx(chunk.std())
        assert (row["value_min"], row["value_max"], row["value_last"]) == (chunk.min(), chunk.max(), chunk[-1])
    single = build_operator("aggregate").apply(events([-1.0, 0.0]), OperatorContext("cpu", 60))
    assert single["value_std"].to_list() == [0.0, 0.0]


def test_categorical_fields_give_counts_of_their_values() -> None:
    frame = events([1, 2, 3, 4], step_s=30).with_columns(
        pl.Series("payload", [json.dumps({"value": i, "status": s}) for i, s in
                              enumerate(["ok", "ok", "server error", "ok"])])
    )
    bars = build_operator("aggregate", {"categorical": ["status"], "stats": ["mean"]}).apply(
        frame, OperatorContext("cpu", 60)
    )
    assert bars.select("status_ok_count", "status_server_error_count", "value_mean").rows() == [
        (2.0, 0.0, 0.5), (1.0, 1.0, 2.5)
    ]


def test_a_field_that_would_overwrite_a_bar_column_is_left_out_and_counted() -> None:
    context = OperatorContext("cpu", 60)
    bars = build_operator("aggregate", {"stats": ["count", "mean"]}).apply(
        events([1, 2], step_s=10, extra={"event": 5}), context)
    assert bars.select("event_count", "value_count").row(0) == (2, 2.0)
    assert context.dropped == {"aggregate: payload.event clashes with a bar column (field left out)": 2}


def test_aggregate_method_and_params_are_checked() -> None:
    with pytest.raises(OperatorError, match="unknown method 'median'.*known: ohlcv, stats"):
        build_operator("aggregate", {"method": "median"})
    with pytest.raises(OperatorError, match="quantiles"):
        build_operator("aggregate", {"quantiles": [1.5]})
    with pytest.raises(OperatorError, match="price: an unknown parameter"):
        build_operator("aggregate", {"price": "p"})


def test_bar_size_is_per_source_and_a_source_alone_is_a_stream() -> None:
    config = PreprocessingConfig.model_validate({"bar_seconds": 10, "pipeline_by_source": [
        {"source": "cpu", "bar_seconds": 300, "operators": [{"aggregate": {"fields": ["value"]}}]},
        {"source": "mem", "operators": [{"aggregate": {"fields": ["value"]}}]},
    ]})
    frame = pl.concat([events([1, 2, 3, 4, 5], step_s=120), events([1, 2], step_s=5, stream="mem")])
    bars = compute_bars(config, frame.drop("stream"), pl.DataFrame())
    assert bars["cpu"].select("stream", "event_count").rows() == [("cpu", 3), ("cpu", 2)]
    assert bars["mem"].select("stream", "event_count").rows() == [("mem", 2)]
    assert config.bar_seconds_for_stream("cpu") == 300


def test_old_history_cleans_against_its_own_newest_event_not_the_clock() -> None:
    ingest = datetime(2026, 11, 30, tzinfo=UTC)
    raw = events([1, -1, 0]).drop("stream").with_columns(pl.lit(ingest).cast(MS).alias("ingest_time"))
    stray = raw.head(1).with_columns(pl.lit(datetime(1970, 1, 1, tzinfo=UTC)).cast(MS).alias("timestamp"),
                                     pl.lit("stray").alias("event_id"))
    frame = pl.concat([raw, stray])
    config = CleanConfig(numeric_fields={"record": ["value"]})
    newest = {"cpu": T0 + timedelta(minutes=2)}
    clean, dead = clean_frame(frame, timedelta(minutes=1), config, newest)
    assert clean["event_id"].to_list() == ["e00000", "e00001", "e00002"]
    assert dead["reason"].to_list() == [
        "event time is more than max_age_days=3650 before the newest event of its source (2014-03-01T00:02:00Z)"
    ]
    assert rejection_counts(dead) == {
        "event time is more than max_age_days=3650 before the newest event of its source": 1
    }
    # Against the wall clock (a live source), the same 2014 events are too old, and the reason says so.
    _, dead_live = clean_frame(frame, timedelta(minutes=1), config)
    assert rejection_counts(dead_live) == {"event time is more than max_age_days=3650 before its ingest time": 4}


def test_long_spans_give_bars_over_the_whole_span() -> None:
    frame = events([float(i % 7 - 3) for i in range(150)], step_s=86_400)  # 150 days, one value a day
    bars = build_operator("aggregate").apply(frame, OperatorContext("cpu", 86_400))
    assert bars.height == 150
    assert bars["bar_time"][-1] - bars["bar_time"][0] == timedelta(days=149)
    assert bars["value_min"].min() == -3.0


def _pattern(stream: str = "cpu") -> PatternEvent:
    bars = pl.DataFrame({"bar_time": [T0 + timedelta(minutes=5 * i) for i in range(20)],
                         "value_mean": [-2.0] * 10 + [0.0] * 10, "value_std": [0.1] * 20}).cast({"bar_time": MS})
    changes, units, levels = metric_changes(bars, T0 + timedelta(minutes=50), T0 + timedelta(hours=2), 10, 300)
    assert (changes, units) == ({"value": 2.0}, {"value": "delta"})
    return PatternEvent(
        pattern_id="p1", type="concept_drift", timestamp=T0 + timedelta(minutes=50), window_start=T0,
        source_streams=[stream],
        details=PatternDetails(prev_state="value level -2", new_state="value level 0", metric_changes=changes,
                               metric_units=units, metrics=levels),
        explain=PatternExplain(top_contributors=[{"field": "value_mean", "score": 1.0}]),
        algorithm=AlgorithmInfo(name="river.ADWIN", version="0.26"), confidence=0.8,
    )


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_metric_card_speaks_of_its_own_fields_not_of_trades(lang: str) -> None:
    pattern = _pattern()
    rows = events([-2, -2, 0, 0], step_s=1500).drop("stream").with_columns(pl.lit("cpu").alias("source"))
    start, end = T0, T0 + timedelta(hours=2)
    context = summarise_context(rows, pattern, start, end, 60)
    [source] = context.sources
    assert [line.values for line in source.lines] == [
        {"field": "value", "count": 4, "min": -2.0, "max": 0.0, "first": -2.0, "last": 0.0}
    ]
    card = render_card(pattern, context, [], lang, load_cards_config(REPO / "config"))
    text = card.markdown.lower()
    assert "value" in text and "-2 to 0" in card.markdown.replace(" 至 ", " to ")
    assert "value +2" in card.summary
    assert [word for word in MARKET_WORDS if word in text] == []


def test_a_keyed_stream_context_holds_only_its_own_events() -> None:
    config = PreprocessingConfig.model_validate({"pipeline_by_source": [
        {"source": "hosts", "stream_key": "host", "operators": [{"aggregate": {"fields": ["value"]}}]}]})
    rows = pl.concat([events([1, 2], extra={"host": "a"}), events([50], extra={"host": "b"})]).drop(
        "stream").with_columns(pl.lit("hosts").alias("source"))
    context = summarise_context(rows, _pattern("hosts:a"), T0, T0 + timedelta(hours=1), 60, config)
    [source] = context.sources
    assert (source.source, source.events, source.lines[0].values["max"]) == ("hosts:a", 2, 2.0)


# Keys the API would refuse as a filter, and the names their streams get: control characters written
# as \xNN, long keys cut to 256 characters, and every changed name marked with a hash of its key.
HOSTILE_KEYS = {
    "web-1": "hosts:web-1",
    "web\x1b]0;pwned\x07": "hosts:web\\x1b]0;pwned\\x07~9ea38844c3dc",
    "x\n- **Forged:**": "hosts:x\\x0a- **Forged:**~994fbbfa3a8e",
    "L" * 10_240: "hosts:" + "L" * 237 + "~5c34569b20ab",
    "L" * 10_239 + "M": "hosts:" + "L" * 237 + "~9379e3053e29",
}
KEYED_HOSTS = {"pipeline_by_source": [
    {"source": "hosts", "stream_key": "host", "operators": [{"aggregate": {"fields": ["value"]}}]}]}


def test_keys_the_api_would_refuse_give_stream_names_it_accepts_the_same_on_every_run() -> None:
    config = PreprocessingConfig.model_validate(KEYED_HOSTS)
    frame = pl.concat([events([i, i + 1], stream="hosts", extra={"host": key})
                       for i, key in enumerate(HOSTILE_KEYS)]).drop("stream")
    for _ in range(2):  # a replay names the streams as the first run did
        bars = compute_bars(config, frame, pl.DataFrame())["hosts"]
        assert dict(bars.group_by("stream").agg(pl.col("value_max").max()).rows()) == {
            name: float(i + 1) for i, name in enumerate(HOSTILE_KEYS.values())}
    # The card's context finds the events of a renamed stream.
    rows = frame.with_columns(pl.lit("hosts").alias("source"))
    renamed = HOSTILE_KEYS["web\x1b]0;pwned\x07"]
    context = summarise_context(rows, _pattern(renamed), T0, T0 + timedelta(hours=1), 60, config)
    assert [(source.source, source.events) for source in context.sources] == [(renamed, 2)]


def test_generic_modules_name_no_market_field() -> None:
    core = REPO / "qraft_core"
    generic = [core / name for name in (
        "clean.py", "config.py", "features.py", "patterns/materialize.py", "patterns/metrics.py",
        "operators/aggregate.py", "operators/pipeline.py")] + sorted((core / "explain").glob("*.py"))
    for path in generic:
        text = path.read_text().lower()
        for word in ("buy_ratio", "realized_vol", "mean_size", "binance", '"s"', "ohlcv"):
            if word == "ohlcv" and path.name == "aggregate.py":
                continue  # its docstring names the plugin's method
            assert word not in text, (path, word)


@pytest.mark.parametrize("field", ["Water flow [l/s]", "cpu.user %", 'say "hi"', "back\\slash", "a']['b"])
def test_fields_named_as_users_name_them_are_read_and_detected(field: str) -> None:
    """Units, dots, brackets and quotes in a column name: the name is a key, never a path or a glob."""
    frame = events([1, 2, 3, 4], step_s=150).with_columns(
        pl.col("payload").map_elements(lambda p: json.dumps({field: json.loads(p)["value"]}), return_dtype=pl.Utf8)
    )
    bars = build_operator("aggregate", {"fields": [field], "stats": ["mean", "max"]}).apply(
        frame, OperatorContext("cpu", 300)
    )
    assert bars[f"{field}_mean"].to_list() == [1.5, 3.5]
    # A field that must be numeric is checked under its own name.
    config = CleanConfig(numeric_fields={"record": [field]})
    raw = frame.drop("stream").with_columns(pl.col("timestamp").alias("ingest_time"))
    raw = raw.with_columns(pl.when(pl.col("event_id") == "e00001").then(pl.lit(json.dumps({field: "n/a"})))
                           .otherwise("payload").alias("payload"))
    clean, dead = clean_frame(raw, timedelta(minutes=1), config, {"cpu": T0})
    assert clean["event_id"].to_list() == ["e00000", "e00002", "e00003"]
    assert dead["reason"].to_list() == [f"payload.{field}: expected a finite number, got n/a"]
    # A detector configured with the column's own name finds it on the stream.
    from qraft_core.detectors.config import DetectorSpec

    spec = DetectorSpec(name="d", engine="qraft", algorithm="CalibratedDrift", kind="concept_drift",
                        features=[f"{field}_mean"], streams=["flow[1]"])
    assert spec.matches("flow[1]")
    assert spec.resolve_features(list(bars.columns)) == [f"{field}_mean"]


def test_values_too_large_to_square_are_left_out_and_counted() -> None:
    context = OperatorContext("cpu", 300)
    frame = events([1, -1e308, 3, 1e151, -1e150], step_s=100)
    bars = build_operator("aggregate", {"fields": ["value"], "stats": ["count", "mean", "std"]}).apply(frame, context)
    assert bars.select("value_count", "value_mean").rows() == [(2.0, 2.0), (1.0, -1e150)]
    assert context.dropped == {"aggregate: payload.value is not a finite number of at most 1e+150 in size "
                               "(value left out)": 2}
