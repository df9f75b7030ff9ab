"""The demo generator: determinism, ground truth, malformed lines, and patterns visible in features."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from qraft_core.adapters.base import parse_failure_reason
from qraft_core.adapters.file import FileAdapter, read_records
from qraft_core.clean import check_event
from qraft_core.config import CleanConfig, SourceConfig
from qraft_core.demo import DemoFiles, generate_demo
from qraft_core.demo.generate import END, START, clean_events_frame
from qraft_core.features import load_features, materialize_features
from qraft_core.operators import load_preprocessing
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def truth(demo: DemoFiles) -> dict[str, Any]:
    return json.loads(demo.ground_truth.read_text())


@pytest.fixture(scope="module")
def features(demo: DemoFiles) -> pl.DataFrame:
    store = MemoryStore()
    store.insert("clean_events", clean_events_frame(demo))
    materialize_features(store, load_preprocessing(REPO / "config"), START, END, timedelta(minutes=1))
    return load_features(store, START, END)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_same_seed_gives_byte_identical_files(demo: DemoFiles, tmp_path: Path) -> None:
    again = generate_demo(tmp_path / "again", seed=7)
    for name in ("trades", "news", "ground_truth"):
        assert getattr(again, name).read_bytes() == getattr(demo, name).read_bytes(), name
    other = generate_demo(tmp_path / "other", seed=8)
    assert other.trades.read_bytes() != demo.trades.read_bytes()


def test_ground_truth_has_the_promised_patterns(truth: dict[str, Any]) -> None:
    assert truth["version"] == 1 and truth["seed"] == 7 and truth["tolerance_s"] == 180
    assert truth["window"] == {"start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T03:00:00.000Z"}
    kinds = Counter(p["type"] for p in truth["patterns"])
    assert kinds == {"anomaly": 15, "concept_drift": 4, "cluster_change": 3, "freq_pattern": 3}
    assert {p["stream"] for p in truth["patterns"]} == {
        "binance_spot:BTCUSDT",
        "binance_spot:ETHUSDT",
        "news",
    }
    assert len({p["id"] for p in truth["patterns"]}) == len(truth["patterns"])
    by_stream: dict[str, list[datetime]] = {}
    for pattern in truth["patterns"]:
        by_stream.setdefault(pattern["stream"], []).append(when(pattern["time"]))
        assert pattern["description"] and pattern["details"]
    for stream, times in by_stream.items():
        times.sort()
        assert times[0] >= START + timedelta(minutes=20), stream
        assert times[-1] < END, stream
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= timedelta(minutes=8), stream


def test_sizes_of_the_files(demo: DemoFiles, truth: dict[str, Any]) -> None:
    lines = demo.trades.read_text().splitlines()
    assert 90_000 <= len(lines) <= 120_000
    headlines = pl.read_csv(demo.news)
    assert headlines.columns == ["id", "published_at", "headline", "source"]
    assert 200 <= headlines.height <= 500
    assert truth["malformed_lines"] == 10 == len(truth["malformed"])


def test_malformed_lines_are_rejected_at_their_stage_and_only_they(
    demo: DemoFiles, truth: dict[str, Any], tmp_path: Path
) -> None:
    source = SourceConfig(name="binance_spot", type="file", endpoint=str(demo.trades), parser="binance_trade")
    adapter = FileAdapter(source, FileAdapter.options_model(), tmp_path)
    expected = {m["line"]: m["stage"] for m in truth["malformed"]}
    checked = set(expected) | {line + 1 for line in expected} | set(range(1, 200))
    stages: dict[int, str] = {}
    for number, (record, raw, error) in enumerate(read_records(demo.trades, "jsonl", []), start=1):
        if number not in checked:
            continue
        if record is None:
            stages[number] = "adapter"
            assert error
            continue
        try:
            event = adapter.to_event(record, raw)
        except ValueError as exc:
            stages[number] = "adapter"
            assert parse_failure_reason(exc)
            continue
        reason, _ = check_event(
            json.dumps(event.payload), event.type, event.timestamp, event.timestamp, CleanConfig()
        )
        if reason is not None:
            stages[number] = "clean"
    assert stages == expected


def test_planted_patterns_stand_out_in_the_features(truth: dict[str, Any], features: pl.DataFrame) -> None:
    for pattern in truth["patterns"]:
        t = when(pattern["time"])
        stream = features.filter(pl.col("stream") == pattern["stream"])
        if pattern["type"] == "anomaly":
            near = stream.filter(
                pl.col("bar_time").is_between(t - timedelta(seconds=10), t + timedelta(seconds=20))
            )
            feature = {
                "price_spike": "log_return_z",
                "volume_burst": "volume_z",
                "block_trade": "mean_size_z",
            }
            assert near[feature[pattern["details"]["kind"]]].abs().max() > 8, pattern["id"]
        elif pattern["type"] == "concept_drift":
            before = stream.filter(pl.col("bar_time").is_between(t - timedelta(minutes=5), t, closed="left"))
            after = stream.filter(
                pl.col("bar_time").is_between(t + timedelta(minutes=1), t + timedelta(minutes=6))
            )
            ratio = after["realized_vol"].mean() / before["realized_vol"].mean()  # type: ignore[operator]
            assert ratio == pytest.approx(pattern["details"]["ratio"], rel=0.2), pattern["id"]
        elif pattern["type"] == "cluster_change":
            after_buy = pattern["details"]["after"]["buy"]
            after = stream.filter(
                pl.col("bar_time").is_between(t + timedelta(minutes=1), t + timedelta(minutes=6))
            )
            assert after["buy_ratio"].mean() == pytest.approx(after_buy, abs=0.06), pattern["id"]
        else:
            first, second = pattern["details"]["items"]
            both = features.filter(
                (pl.col("stream") == "news")
                & pl.col("items").list.contains(first)
                & pl.col("items").list.contains(second)
            )
            assert both["bar_time"].min() == t, pattern["id"]
            assert both.height >= 10
