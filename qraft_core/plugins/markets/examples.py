"""Market examples: one pattern event of every type on trades and headlines, with the clean data
around it, for documentation and tests.

The values are synthetic but shaped like real detector output: states before
and after, metric changes with units, contributors, and cross-validated
findings reported by both River and CapyMOA.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from qraft_core.events import (
    AlgorithmInfo,
    Contributor,
    PatternDetails,
    PatternEvent,
    PatternExplain,
    PatternType,
    stable_id,
)

BASE = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
TRADE_SOURCE = "binance_spot"
NEWS_SOURCE = "news"


def _pattern(
    type_: PatternType,
    at: timedelta,
    streams: list[str],
    details: PatternDetails,
    contributors: list[tuple[str, float]],
    algorithms: list[AlgorithmInfo],
    confidence: float,
) -> PatternEvent:
    timestamp = BASE + at
    return PatternEvent(
        pattern_id=stable_id("example", type_.value, timestamp.isoformat()),
        type=type_,
        timestamp=timestamp,
        window_start=timestamp.replace(second=0, microsecond=0),
        source_streams=streams,
        details=details,
        explain=PatternExplain(top_contributors=[Contributor(field=f, score=s) for f, s in contributors]),
        algorithm=algorithms[0],
        algorithms=algorithms,
        cross_validated=len({a.name.split(".")[0] for a in algorithms}) > 1,
        confidence=confidence,
    )


def example_patterns() -> list[PatternEvent]:
    """Four findings, one per pattern type, in time order.

    >>> [p.type.value for p in example_patterns()]
    ['concept_drift', 'anomaly', 'cluster_change', 'freq_pattern']
    """
    adwin = {"delta": 0.002, "clock": 32}
    return [
        _pattern(
            PatternType.concept_drift,
            timedelta(minutes=32, seconds=15),
            [TRADE_SOURCE],
            PatternDetails(
                prev_state="Cluster#2 (low volatility)",
                new_state="Cluster#4 (high volatility)",
                metric_changes={"volatility": 0.37, "volume": 1.25},
                metric_units={"volatility": "relative", "volume": "BTC"},
                metrics={"window_before": 240.0, "mean_before": 0.0012, "mean_after": 0.0031},
            ),
            [("volatility", 0.6), ("volume", 0.3)],
            [
                AlgorithmInfo(name="river.ADWIN", version="0.22.0", params=adwin),
                AlgorithmInfo(name="capymoa.ADWIN", version="0.15.1", params=adwin),
            ],
            0.87,
        ),
        _pattern(
            PatternType.anomaly,
            timedelta(minutes=41, seconds=30),
            [TRADE_SOURCE],
            PatternDetails(
                prev_state="normal trading",
                new_state="price spike",
                metric_changes={"price": 0.021, "trade_count": 45.0},
                metric_units={"price": "relative", "trade_count": "trades"},
                metrics={"score": 0.93, "threshold": 0.8},
            ),
            [("price", 0.82), ("trade_count", 0.11)],
            [
                AlgorithmInfo(
                    name="river.HalfSpaceTrees",
                    version="0.22.0",
                    params={"n_trees": 25, "height": 8, "window_size": 250, "seed": 42},
                )
            ],
            0.93,
        ),
        _pattern(
            PatternType.cluster_change,
            timedelta(minutes=50),
            [TRADE_SOURCE, NEWS_SOURCE],
            PatternDetails(
                prev_state="cluster 1 (quiet)",
                new_state="cluster 3 (news-driven)",
                metric_changes={"headline_count": 3.0, "spread": -0.15},
                metric_units={"headline_count": "headlines", "spread": "relative"},
                metrics={"silhouette": 0.41},
            ),
            [("headline_count", 0.55), ("spread", 0.25), ("volume", 0.2)],
            [
                AlgorithmInfo(name="river.DenStream", version="0.22.0", params={"epsilon": 0.5, "mu": 2}),
                AlgorithmInfo(name="capymoa.CluStream", version="0.15.1", params={"max_num_kernels": 50}),
            ],
            0.71,
        ),
        _pattern(
            PatternType.freq_pattern,
            timedelta(minutes=58, seconds=45),
            [NEWS_SOURCE],
            PatternDetails(
                prev_state="no recurring itemset",
                new_state="{etf, approval}",
                metric_changes={"support": 0.12},
                metric_units={"support": "fraction"},
                metrics={"support": 0.12, "rule_confidence": 0.8},
            ),
            [("etf", 0.5), ("approval", 0.4)],
            [AlgorithmInfo(name="qraft.FrequentItemsets", version="1.0", params={"min_support": 0.05})],
            0.64,
        ),
    ]


def example_clean_events() -> pl.DataFrame:
    """Clean events from 10:20 to 11:10: a trade every 30 s, a headline every 7 minutes, and noise
    from a source no example pattern looks at."""
    rows = []
    for i in range(100):
        ts = BASE + timedelta(minutes=20, seconds=30 * i)
        payload = {
            "e": "trade",
            "s": "BTCUSDT",
            "t": 1000 + i,
            "p": f"{42000 + 2.5 * i:.2f}",
            "q": f"{0.01 * (i % 5 + 1):.2f}",
            "T": int(ts.timestamp() * 1000),
        }
        rows.append((f"{TRADE_SOURCE}:BTCUSDT:{1000 + i}", TRADE_SOURCE, "trade", ts, payload))
    for i in range(8):
        ts = BASE + timedelta(minutes=20 + 7 * i, seconds=10)
        payload = {"id": f"n{i}", "published_at": ts.isoformat(), "headline": f"ETF approval talk, item {i}"}
        rows.append((f"{NEWS_SOURCE}:n{i}", NEWS_SOURCE, "headline", ts, payload))
    for i in range(20):
        ts = BASE + timedelta(minutes=25, seconds=60 * i)
        rows.append((f"weather:{i}", "weather", "reading", ts, {"temp": 20 + i}))
    return pl.DataFrame(
        {
            "event_id": [r[0] for r in rows],
            "source": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "timestamp": [r[3] for r in rows],
            "ingest_time": [r[3] + timedelta(milliseconds=150) for r in rows],
            "window_start": [r[3].replace(second=0) for r in rows],
            "payload": [json.dumps(r[4]) for r in rows],
            "repaired": [0] * len(rows),
        },
        schema_overrides={
            "timestamp": pl.Datetime("ms", "UTC"),
            "ingest_time": pl.Datetime("ms", "UTC"),
            "window_start": pl.Datetime("ms", "UTC"),
        },
    )


def pattern_rows(patterns: list[PatternEvent]) -> pl.DataFrame:
    """Pattern events as rows of `pattern_events`."""
    return pl.DataFrame(
        {
            "pattern_id": [p.pattern_id for p in patterns],
            "type": [p.type.value for p in patterns],
            "timestamp": [p.timestamp for p in patterns],
            "window_start": [p.window_start for p in patterns],
            "source_streams": [p.source_streams for p in patterns],
            "confidence": [p.confidence for p in patterns],
            "cross_validated": [int(p.cross_validated) for p in patterns],
            "algorithm": [p.algorithm.name for p in patterns],
            "algorithm_version": [p.algorithm.version for p in patterns],
            "restart": [int(p.restart) for p in patterns],
            "body": [p.model_dump_json() for p in patterns],
        },
        schema_overrides={"timestamp": pl.Datetime("ms", "UTC"), "window_start": pl.Datetime("ms", "UTC")},
    )
