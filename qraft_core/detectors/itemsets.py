"""Emerging co-occurrences of items (news keywords) with lossy counting.

Each bar's items form one transaction. Long-run counts of every itemset of
size 1..max_size are kept by lossy counting (Manku & Motwani): counts are
exact up to `epsilon` times the number of transactions, and memory stays
bounded because rare itemsets are pruned at every bucket boundary. Recent
counts cover the last `recent_bars` transactions exactly. An itemset of two
or more items is *emerging* when, in the recent window, it occurs at least
`min_count` times in at least `min_distinct` different transactions, its
lift is at least `min_lift`, and its support grew `min_growth` times over
its long-run support before the window. Per topic one finding is reported:
the strongest itemset, after which itemsets sharing one of its items stay
quiet for `cooldown_bars` transactions.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> items = [["etf"] if i % 7 == 0 else ["fed"] if i % 5 == 0 else [] for i in range(300)]
>>> items += [["etf", "approval", "sec", f"w{i}"] if i % 3 == 0 else [] for i in range(30)]
>>> bars = pl.DataFrame({"bar_time": [t0 + timedelta(seconds=10 * i) for i in range(330)],
...     "items": items}, schema_overrides={"items": pl.List(pl.Utf8)})
>>> miner = FrequentItemsets("news_itemsets", "news", [], {"max_size": 3})
>>> [(s.group, s.time.strftime("%H:%M:%S")) for s in miner.update(bars)]
[('approval+etf+sec', '00:51:00')]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from itertools import combinations
from typing import Any, ClassVar

import polars as pl

from qraft_core.detectors.base import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Limit,
    Signal,
    StreamDetector,
    confidence_of,
    register_detector,
)

ITEM_SEPARATOR = "+"


@register_detector("LossyCountingItemsets")
class FrequentItemsets(StreamDetector):
    engine: ClassVar[str] = "qraft"
    kind: ClassVar[str] = "freq_pattern"
    defaults: ClassVar[dict[str, Any]] = {
        "items_column": "items",
        "epsilon": 0.001,
        "max_size": 2,
        "recent_bars": 30,
        "min_count": 3,
        # Distinct transactions among the occurrences: a repeated headline is one context.
        "min_distinct": 3,
        "min_lift": 2.0,
        "min_growth": 3.0,
        "max_p_value": 1e-3,
        "cooldown_bars": 180,
        "warmup_bars": 60,
        "confidence_scale": 2.0,
    }
    limits: ClassVar[dict[str, Limit]] = {
        "epsilon": PROBABILITY, "max_size": AT_LEAST_ONE, "recent_bars": AT_LEAST_ONE, "min_count": AT_LEAST_ONE,
        "min_distinct": AT_LEAST_ONE, "min_lift": POSITIVE, "min_growth": POSITIVE, "max_p_value": FRACTION,
        "cooldown_bars": NON_NEGATIVE, "warmup_bars": NON_NEGATIVE, "confidence_scale": POSITIVE,
    }

    @property
    def algorithm(self) -> str:
        return "qraft.LossyCountingItemsets"

    @property
    def version(self) -> str:
        return "1"

    def _fresh_state(self) -> dict[str, Any]:
        return {
            # itemset key -> [count, max undercount]
            "counts": {},
            "transactions": 0,
            "recent": deque(maxlen=int(self.param("recent_bars"))),
            "recent_counts": {},
            "last_emitted": {},
        }

    def update(self, rows: pl.DataFrame) -> list[Signal]:
        column = str(self.param("items_column"))
        if column not in rows.columns:
            raise ValueError(f"detector {self.name}: bars lack the {column!r} column")
        signals: list[Signal] = []
        for time, items in zip(rows["bar_time"].to_list(), rows[column].to_list(), strict=True):
            signals.extend(self._transaction(time, sorted(set(items or []))))
        return signals

    def _itemsets(self, items: list[str]) -> list[str]:
        keys: list[str] = []
        for size in range(1, min(int(self.param("max_size")), len(items)) + 1):
            keys.extend(ITEM_SEPARATOR.join(combo) for combo in combinations(items, size))
        return keys

    def _transaction(self, time: datetime, items: list[str]) -> list[Signal]:
        state = self.state
        keys = self._itemsets(items)
        state["transactions"] += 1
        n = state["transactions"]
        width = math.ceil(1 / float(self.param("epsilon")))
        bucket = math.ceil(n / width)
        for key in keys:
            entry = state["counts"].get(key)
            if entry is None:
                state["counts"][key] = [1, bucket - 1]
            else:
                entry[0] += 1
        if n % width == 0:
            state["counts"] = {k: v for k, v in state["counts"].items() if v[0] + v[1] > bucket}
        recent = state["recent"]
        if len(recent) == recent.maxlen:
            _add(state["recent_counts"], recent[0][0], -1)
        recent.append((keys, tuple(items)))
        _add(state["recent_counts"], keys, 1)
        if n <= int(self.param("warmup_bars")):
            return []
        found = [s for key in keys if ITEM_SEPARATOR in key and (s := self._emerging(time, key)) is not None]
        # One topic, one finding: the strongest itemset is reported, and any other sharing
        # an item with an itemset reported within the cooldown belongs to the same topic.
        reported = []
        for signal in sorted(found, key=lambda s: (-s.extra["count"], -len(s.fields), -s.score, s.group)):
            if self._topic_is_active(signal.fields):
                continue
            state["last_emitted"][signal.group] = n
            reported.append(signal)
        return reported

    def _topic_is_active(self, items: Iterable[str]) -> bool:
        state = self.state
        horizon = state["transactions"] - int(self.param("cooldown_bars"))
        return any(
            last > horizon and not set(items).isdisjoint(key.split(ITEM_SEPARATOR))
            for key, last in state["last_emitted"].items()
        )

    def _emerging(self, time: datetime, key: str) -> Signal | None:
        state = self.state
        recent_n = len(state["recent"])
        count = state["recent_counts"].get(key, 0)
        if count < int(self.param("min_count")):
            return None
        items = key.split(ITEM_SEPARATOR)
        contexts = {transaction for keys, transaction in state["recent"] if key in keys}
        if len(contexts) < int(self.param("min_distinct")):
            return None
        expected = math.prod(state["recent_counts"].get(i, 0) / recent_n for i in items)
        support = count / recent_n
        lift = support / expected if expected > 0 else 0.0
        earlier_n = state["transactions"] - recent_n
        earlier = max(state["counts"].get(key, [0, 0])[0] - count, 0) / earlier_n if earlier_n else 0.0
        growth = support / max(earlier, 1.0 / max(earlier_n, 1))
        # How surprising the recent count is if the itemset kept its earlier rate
        # (one pseudo-occurrence, so an itemset never seen before is not infinitely surprising).
        p_value = _poisson_tail(count, recent_n * (earlier * earlier_n + 1) / (earlier_n + 2))
        if (
            lift < float(self.param("min_lift"))
            or growth < float(self.param("min_growth"))
            or p_value > float(self.param("max_p_value"))
        ):
            return None
        return self.signal(
            time,
            math.log(growth),
            confidence_of(math.log(growth), float(self.param("confidence_scale"))),
            {item: state["recent_counts"].get(item, 0) for item in items},
            f"{' & '.join(items)}: support {earlier:.4f} over {earlier_n} earlier bars",
            f"{' & '.join(items)}: support {support:.4f}, lift {lift:.2f} over the last {recent_n} bars",
            group=key,
            extra={"support": round(support, 6), "lift": round(lift, 6), "growth": round(growth, 6),
                   "count": float(count), "p_value": float(f"{p_value:.4g}")},
        )


def _add(counts: dict[str, int], keys: Iterable[str], step: int) -> None:
    for key in keys:
        value = counts.get(key, 0) + step
        if value:
            counts[key] = value
        else:
            counts.pop(key, None)


def _poisson_tail(k: int, rate: float) -> float:
    """P(X >= k) for X ~ Poisson(rate).

    >>> round(_poisson_tail(3, 0.5), 5)
    0.01439
    """
    term = math.exp(-rate)
    below = 0.0
    for i in range(k):
        below += term
        term *= rate / (i + 1)
    return max(1.0 - below, 0.0)
