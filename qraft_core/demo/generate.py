"""The bundled demo dataset: three hours of trades and headlines with planted patterns.

`generate_demo(out_dir, seed)` writes three files; the same seed always gives
byte-identical files.

``trades.jsonl`` — one Binance trade-stream message per line, two symbols
(BTCUSDT, ETHUSDT) merged in trade-time order::

    {"e":"trade","E":<event ms>,"s":"BTCUSDT","t":<trade id>,"p":"<price>","q":"<qty>",
     "T":<trade ms>,"m":<buyer is maker: true = taker sold>,"M":true}

A few lines are malformed on purpose (truncated JSON, missing ``T`` or ``s``,
a non-numeric or NaN price); each must end up as a dead letter.

``news.csv`` — headlines: ``id,published_at,headline,source`` with
``published_at`` in ISO 8601 UTC.

``ground_truth.json`` — what was planted, for scoring detectors::

    {"version": 1, "seed": 7,
     "window": {"start": "2026-01-05T00:00:00.000Z", "end": "2026-01-05T03:00:00.000Z"},
     "tolerance_s": 180,              # a finding within this many seconds of `time` matches
     "malformed_lines": 10,
     "malformed": [{"line": 1234, "kind": "truncated_json", "stage": "adapter"}, ...],
     "patterns": [{"id": "gt-btc-01", "type": "anomaly",
                   "stream": "binance_spot:BTCUSDT",
                   "time": "2026-01-05T00:25:03.000Z",
                   "description": "...", "details": {...}}, ...]}

`type` is one of concept_drift, anomaly, cluster_change, freq_pattern;
`stream` is "<source>:<symbol>" for trades and "news" for headlines; `time` is
the onset of the pattern. The same format scores any labelled data: list each
known pattern with its stream, type and onset time.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qraft_core.adapters.file import read_records
from qraft_core.adapters.parsers import GenericOptions, build_parser
from qraft_core.clean import clean_frame
from qraft_core.config import CleanConfig
from qraft_core.events import checksum, content_problem, iso

START = datetime(2026, 1, 5, tzinfo=UTC)
END = datetime(2026, 1, 5, 3, tzinfo=UTC)
TRADE_SOURCE = "binance_spot"
NEWS_STREAM = "news"
TOLERANCE_S = 180
SECONDS = int((END - START).total_seconds())
START_MS = int(START.timestamp() * 1000)


@dataclass(frozen=True)
class DemoFiles:
    trades: Path
    news: Path
    ground_truth: Path


@dataclass(frozen=True)
class Market:
    symbol: str
    price: float
    trades_per_s: float
    # Volatility of the log price per square root of a second.
    sigma: float
    median_qty: float
    qty_decimals: int
    first_trade_id: int


MARKETS = (
    Market("BTCUSDT", 95_000.0, 5.6, 1.0e-4, 0.012, 5, 4_210_000_000),
    Market("ETHUSDT", 3_300.0, 3.8, 1.4e-4, 0.25, 4, 2_105_000_000),
)


@dataclass(frozen=True)
class Planted:
    """One planted pattern on a trade stream, `at` seconds after START."""

    at: float
    type: str
    kind: str
    params: dict[str, float] = field(default_factory=dict)


# Regime changes persist until the next one; anomalies last seconds. Every
# pattern of a stream is ≥ 8 minutes from the next and none is in the first 20.
PLANTED: dict[str, list[Planted]] = {
    "BTCUSDT": [
        Planted(25 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": 1}),
        Planted(35 * 60 + 2, "anomaly", "volume_burst", {"rate": 8, "size": 2}),
        Planted(45 * 60, "concept_drift", "volatility", {"sigma": 3.0}),
        Planted(57 * 60 + 4.5, "anomaly", "block_trade", {"size": 250}),
        Planted(70 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": -1}),
        Planted(82 * 60, "concept_drift", "volatility", {"sigma": 1.0}),
        Planted(95 * 60 + 2, "anomaly", "volume_burst", {"rate": 8, "size": 2}),
        Planted(110 * 60, "cluster_change", "flow_regime", {"sigma": 1.3, "size": 3.5, "buy": 0.78}),
        Planted(125 * 60 + 4.5, "anomaly", "block_trade", {"size": 250}),
        Planted(140 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": 1}),
        Planted(155 * 60 + 2, "anomaly", "volume_burst", {"rate": 8, "size": 2}),
    ],
    "ETHUSDT": [
        Planted(28 * 60 + 2, "anomaly", "volume_burst", {"rate": 8, "size": 2}),
        Planted(40 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": -1}),
        Planted(52 * 60, "concept_drift", "volatility", {"sigma": 2.5}),
        Planted(65 * 60 + 4.5, "anomaly", "block_trade", {"size": 250}),
        Planted(78 * 60, "cluster_change", "flow_regime", {"sigma": 2.5, "size": 0.35, "buy": 0.25}),
        Planted(92 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": 1}),
        Planted(105 * 60 + 2, "anomaly", "volume_burst", {"rate": 8, "size": 2}),
        Planted(120 * 60, "concept_drift", "volatility", {"sigma": 0.6}),
        Planted(133 * 60 + 4.5, "anomaly", "block_trade", {"size": 250}),
        Planted(148 * 60 + 3, "anomaly", "price_spike", {"sigmas": 14, "sign": -1}),
        Planted(162 * 60, "cluster_change", "flow_regime", {"sigma": 0.6, "size": 3.0, "buy": 0.72}),
    ],
}

SPIKE_SECONDS = 10
BURST_SECONDS = 15
BURST_BUY_PROBABILITY = 0.85
QTY_DISPERSION = 0.7

# --- news -------------------------------------------------------------------
SUBJECTS = (
    "Bitcoin",
    "Ether",
    "Crypto markets",
    "Stablecoin issuers",
    "Miners",
    "Traders",
    "Asian shares",
    "Treasury yields",
    "Gold",
    "Oil",
    "Tech stocks",
    "The dollar",
    "Altcoins",
    "Derivatives desks",
    "Hedge funds",
    "European stocks",
)
VERBS = (
    "edge higher",
    "slip",
    "hold steady",
    "rally",
    "retreat",
    "consolidate",
    "extend gains",
    "trim losses",
    "drift lower",
    "rebound",
    "stall",
    "climb",
)
CLAUSES = (
    "as investors weigh inflation data",
    "ahead of payrolls report",
    "on renewed risk appetite",
    "as liquidity thins",
    "after quiet session",
    "amid regulatory uncertainty",
    "as funding rates normalize",
    "on strong earnings",
    "as volatility cools",
    "before central bank minutes",
    "as options expiry nears",
    "on custody news",
    "as ETF flows stay mixed",
    "after board approval of buyback",
    "as exchange volumes rise",
    "while bond markets wait",
)
OUTLETS = ("Market Wire", "Ledger Daily", "Chain Times", "Macro Brief")
HEADLINES_PER_MINUTE = 1.5


@dataclass(frozen=True)
class Topic:
    """A keyword pair that starts co-occurring in headlines at `minute`."""

    minute: int
    items: tuple[str, str]
    headlines: tuple[str, ...]
    count: int = 16
    span_minutes: int = 20


TOPICS = (
    Topic(
        50,
        ("etf", "approval"),
        (
            "Regulator signals ETF approval for spot ether",
            "ETF approval lifts crypto sentiment",
            "Spot ETF approval draws record inflows",
            "Analysts see ETF approval widening access",
            "ETF approval sparks rally in large caps",
        ),
    ),
    Topic(
        100,
        ("exchange", "hack"),
        (
            "Exchange hack drains hot wallets",
            "Withdrawals paused after exchange hack",
            "Exchange hack losses estimated in millions",
            "Users rush out after exchange hack report",
            "Security firms trace exchange hack funds",
        ),
    ),
    Topic(
        150,
        ("rate", "cut"),
        (
            "Fed rate cut bets jump after soft data",
            "Traders price faster rate cut path",
            "Rate cut hopes lift risk assets",
            "Officials hint at rate cut in spring",
            "Bond rally deepens on rate cut talk",
        ),
    ),
)

MALFORMED_KINDS = (
    ("truncated_json", "adapter"),
    ("missing_trade_time", "adapter"),
    ("non_numeric_price", "clean"),
    ("nan_price", "adapter"),
    ("missing_symbol", "adapter"),
    ("truncated_json", "adapter"),
    ("non_numeric_price", "clean"),
    ("missing_trade_time", "adapter"),
    ("nan_price", "adapter"),
    ("truncated_json", "adapter"),
)


def _iso_at(seconds: float) -> str:
    return iso(START + timedelta(milliseconds=round(seconds * 1000)))


@dataclass
class _Trades:
    symbol: str
    time_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_is_maker: np.ndarray


@dataclass
class _Regime:
    """Per second of the day: volatility, trade size multiple, buy probability and trade rate."""

    sigma: np.ndarray
    size: np.ndarray
    buy: np.ndarray
    rate: np.ndarray


def _regime_entry(plant: Planted, market: Market, before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The description and details of a planted regime change (drift or cluster change)."""
    if plant.type == "concept_drift":
        return {
            "description": f"volatility regime changes: sigma x{after['sigma'] / before['sigma']:.2f} from here on",
            "details": {
                "feature": "realized_vol",
                "sigma_per_sqrt_s_before": market.sigma * before["sigma"],
                "sigma_per_sqrt_s_after": market.sigma * after["sigma"],
                "ratio": round(after["sigma"] / before["sigma"], 4),
            },
        }
    return {
        "description": (
            "joint (volatility, trade size, buy ratio) regime jumps to a new cluster: "
            f"size x{after['size'] / before['size']:.2f}, buy ratio {before['buy']:.2f} → "
            f"{after['buy']:.2f}, volatility x{after['sigma'] / before['sigma']:.2f}"
        ),
        "details": {"features": ["realized_vol", "mean_size", "buy_ratio"], "before": before, "after": dict(after)},
    }


def _plant_regimes(market: Market, regime_of: _Regime) -> list[dict[str, Any]]:
    """Regime changes and volume bursts written into the per-second regime; their truth entries."""
    stream = f"{TRADE_SOURCE}:{market.symbol}"
    truth: list[dict[str, Any]] = []
    regime = {"sigma": 1.0, "size": 1.0, "buy": 0.5}
    for index, plant in enumerate(PLANTED[market.symbol], start=1):
        second = int(plant.at)
        entry: dict[str, Any] = {
            "id": f"gt-{market.symbol[:3].lower()}-{index:02d}",
            "type": plant.type,
            "stream": stream,
            "time": _iso_at(plant.at),
        }
        if plant.type in ("concept_drift", "cluster_change"):
            before = dict(regime)
            regime = {key: plant.params.get(key, regime[key]) for key in ("sigma", "size", "buy")}
            regime_of.sigma[second:] = market.sigma * regime["sigma"]
            regime_of.size[second:] = regime["size"]
            regime_of.buy[second:] = regime["buy"]
            entry.update(_regime_entry(plant, market, before, regime))
        elif plant.kind == "volume_burst":
            span = slice(second, second + BURST_SECONDS)
            regime_of.rate[span] *= plant.params["rate"]
            regime_of.size[span] *= plant.params["size"]
            regime_of.buy[span] = BURST_BUY_PROBABILITY
            entry["description"] = (
                f"volume burst: {plant.params['rate']:.0f}x the trade rate and "
                f"{plant.params['size']:.0f}x the trade size for {BURST_SECONDS}s, mostly buys"
            )
            entry["details"] = {
                "kind": "volume_burst",
                "duration_s": BURST_SECONDS,
                "rate_multiplier": plant.params["rate"],
                "size_multiplier": plant.params["size"],
                "buy_probability": BURST_BUY_PROBABILITY,
                "features": ["volume", "trade_count", "buy_ratio"],
            }
        truth.append(entry)
    return truth


def _plant_trades(market: Market, regime: _Regime, truth: list[dict[str, Any]], time_ms: np.ndarray,
                  log_price: np.ndarray, qty: np.ndarray, buyer_is_maker: np.ndarray) -> None:
    """Price spikes and block trades written into the drawn trades (in place); their truth entries."""
    second_of = time_ms // 1000
    for entry, plant in zip(truth, PLANTED[market.symbol], strict=True):
        onset_ms = round(plant.at * 1000)
        if plant.kind == "price_spike":
            bar_sigma = float(regime.sigma[int(plant.at)]) * math.sqrt(SPIKE_SECONDS)
            jump = plant.params["sign"] * plant.params["sigmas"] * bar_sigma
            inside = (time_ms >= onset_ms) & (time_ms < onset_ms + SPIKE_SECONDS * 1000)
            log_price[inside] += jump
            entry["description"] = (
                f"price spike of {jump * 100:+.2f}% ({plant.params['sigmas']:.0f} bar sigmas) "
                f"that reverts after {SPIKE_SECONDS}s"
            )
            entry["details"] = {
                "kind": "price_spike",
                "duration_s": SPIKE_SECONDS,
                "log_jump": round(jump, 6),
                "magnitude_pct": round(jump * 100, 4),
                "features": ["log_return", "realized_vol"],
            }
        elif plant.kind == "block_trade":
            at = int(np.searchsorted(time_ms, onset_ms))
            qty[at] = market.median_qty * regime.size[second_of[at]] * plant.params["size"]
            buyer_is_maker[at] = False
            entry["time"] = iso(START + timedelta(milliseconds=int(time_ms[at])))
            entry["description"] = (
                f"single-bar anomaly: one block buy of {qty[at]:.{market.qty_decimals}f} "
                f"({plant.params['size']:.0f}x the median trade)"
            )
            entry["details"] = {
                "kind": "block_trade",
                "qty": round(float(qty[at]), market.qty_decimals),
                "size_multiple": plant.params["size"],
                "features": ["volume", "mean_size"],
            }


def _simulate(market: Market, rng: np.random.Generator) -> tuple[_Trades, list[dict[str, Any]]]:
    """Trades of one symbol and the ground-truth entries of its planted patterns."""
    regime = _Regime(np.full(SECONDS, market.sigma), np.ones(SECONDS), np.full(SECONDS, 0.5),
                     np.full(SECONDS, market.trades_per_s))
    truth = _plant_regimes(market, regime)
    counts = rng.poisson(regime.rate)
    seconds = np.repeat(np.arange(SECONDS), counts)
    time_ms = np.sort(seconds * 1000 + rng.integers(0, 1000, seconds.size))
    second_of = time_ms // 1000
    gaps = np.diff(time_ms, prepend=time_ms[0] - 200) / 1000.0
    steps = rng.normal(0.0, 1.0, time_ms.size) * regime.sigma[second_of] * np.sqrt(np.maximum(gaps, 0.001))
    log_price = math.log(market.price) + np.cumsum(steps)
    qty = market.median_qty * regime.size[second_of] * rng.lognormal(0.0, QTY_DISPERSION, time_ms.size)
    buyer_is_maker = rng.random(time_ms.size) >= regime.buy[second_of]
    _plant_trades(market, regime, truth, time_ms, log_price, qty, buyer_is_maker)
    minimum = 10.0**-market.qty_decimals
    trades = _Trades(
        market.symbol,
        time_ms,
        np.round(np.exp(log_price), 2),
        np.maximum(np.round(qty, market.qty_decimals), minimum),
        buyer_is_maker,
    )
    return trades, truth


def _trade_line(
    symbol: str, event_ms: int, trade_id: int, price: str, qty: str, trade_ms: int, maker: bool
) -> str:
    return (
        f'{{"e":"trade","E":{event_ms},"s":"{symbol}","t":{trade_id},"p":"{price}","q":"{qty}",'
        f'"T":{trade_ms},"m":{"true" if maker else "false"},"M":true}}'
    )


def _malformed_line(kind: str, symbol: str, event_ms: int, trade_id: int, trade_ms: int) -> str:
    good = _trade_line(symbol, event_ms, trade_id, "1.00", "1.0", trade_ms, False)
    if kind == "truncated_json":
        return good[: len(good) // 2]
    if kind == "missing_trade_time":
        return good.replace(f',"T":{trade_ms}', "")
    if kind == "non_numeric_price":
        return good.replace('"p":"1.00"', '"p":"n/a"')
    if kind == "nan_price":
        return good.replace('"p":"1.00"', '"p":NaN')
    if kind == "missing_symbol":
        return good.replace(f'"s":"{symbol}",', "")
    raise ValueError(f"unknown malformed kind {kind!r}")


def _write_trades(path: Path, simulated: list[_Trades], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Merge both symbols in trade-time order, with malformed lines spread through the file."""
    total = sum(t.time_ms.size for t in simulated)
    # Malformed lines after the first 20 minutes' worth of lines, spread evenly.
    first = total // 9
    positions = {first + i * (total - first) // len(MALFORMED_KINDS): i for i in range(len(MALFORMED_KINDS))}
    merged = sorted(
        ((int(t.time_ms[i]), order, i) for order, t in enumerate(simulated) for i in range(t.time_ms.size)),
    )
    latency = rng.integers(1, 40, total + len(MALFORMED_KINDS))
    next_id = {t.symbol: next(m.first_trade_id for m in MARKETS if m.symbol == t.symbol) for t in simulated}
    lines: list[str] = []
    malformed: list[dict[str, Any]] = []
    decimals = {m.symbol: m.qty_decimals for m in MARKETS}
    for index, (trade_ms, order, i) in enumerate(merged):
        trades = simulated[order]
        symbol = trades.symbol
        if index in positions:
            kind, stage = MALFORMED_KINDS[positions[index]]
            lines.append(
                _malformed_line(kind, symbol, START_MS + trade_ms, next_id[symbol], START_MS + trade_ms)
            )
            next_id[symbol] += 1
            malformed.append({"line": len(lines), "kind": kind, "stage": stage})
        lines.append(
            _trade_line(
                symbol,
                START_MS + trade_ms + int(latency[index]),
                next_id[symbol],
                f"{trades.price[i]:.2f}",
                f"{trades.qty[i]:.{decimals[symbol]}f}",
                START_MS + trade_ms,
                bool(trades.buyer_is_maker[i]),
            )
        )
        next_id[symbol] += 1
    path.write_text("\n".join(lines) + "\n")
    return malformed


def _write_news(path: Path, rng: np.random.Generator) -> list[dict[str, Any]]:
    minutes = SECONDS // 60
    counts = rng.poisson(HEADLINES_PER_MINUTE, minutes)
    times = np.repeat(np.arange(minutes) * 60.0, counts) + rng.uniform(0, 60, int(counts.sum()))
    rows: list[tuple[float, str]] = []
    for at in times:
        subject = SUBJECTS[rng.integers(len(SUBJECTS))]
        verb = VERBS[rng.integers(len(VERBS))]
        clause = CLAUSES[rng.integers(len(CLAUSES))]
        rows.append((round(float(at), 3), f"{subject} {verb} {clause}"))
    truth = []
    for index, topic in enumerate(TOPICS, start=1):
        onset = topic.minute * 60.0
        offsets = np.sort(rng.uniform(0, topic.span_minutes * 60, topic.count - 1))
        for n, offset in enumerate([0.0, *offsets]):
            rows.append((round(onset + float(offset), 3), topic.headlines[n % len(topic.headlines)]))
        truth.append(
            {
                "id": f"gt-news-{index:02d}",
                "type": "freq_pattern",
                "stream": NEWS_STREAM,
                "time": _iso_at(onset),
                "description": (
                    f"'{topic.items[0]}' and '{topic.items[1]}' start co-occurring in headlines "
                    f"({topic.count} headlines in {topic.span_minutes} minutes, none before)"
                ),
                "details": {
                    "items": list(topic.items),
                    "support_before": 0,
                    "headlines_after": topic.count,
                    "span_minutes": topic.span_minutes,
                },
            }
        )
    rows.sort()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "published_at", "headline", "source"])
    for number, (at, headline) in enumerate(rows, start=1):
        writer.writerow([f"n{number:05d}", _iso_at(at), headline, OUTLETS[number % len(OUTLETS)]])
    path.write_text(buffer.getvalue())
    return truth


def generate_demo(out_dir: Path, seed: int = 7) -> DemoFiles:
    """Write trades.jsonl, news.csv and ground_truth.json into `out_dir`; deterministic in `seed`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    simulated, patterns = [], []
    for market in MARKETS:
        trades, truth = _simulate(market, rng)
        simulated.append(trades)
        patterns += truth
    files = DemoFiles(out_dir / "trades.jsonl", out_dir / "news.csv", out_dir / "ground_truth.json")
    malformed = _write_trades(files.trades, simulated, rng)
    patterns += _write_news(files.news, rng)
    patterns.sort(key=lambda p: (p["time"], p["stream"]))
    ground_truth = {
        "version": 1,
        "seed": seed,
        "window": {"start": iso(START), "end": iso(END)},
        "tolerance_s": TOLERANCE_S,
        "malformed_lines": len(malformed),
        "malformed": malformed,
        "patterns": patterns,
    }
    files.ground_truth.write_text(json.dumps(ground_truth, indent=2, ensure_ascii=False) + "\n")
    return files


def clean_events_frame(files: DemoFiles, start: datetime = START, end: datetime = END) -> pl.DataFrame:
    """The `clean_events` rows the demo files become in [start, end), through the real
    parsers and cleaning checks but without the bus; for testing and benchmarking later stages."""
    trade_parser = build_parser("binance_trade", GenericOptions(), TRADE_SOURCE)
    news_options = GenericOptions(
        id_field="id",
        time_field="published_at",
        event_type="headline",
        required=["id", "published_at", "headline"],
    )
    news_parser = build_parser("generic", news_options, NEWS_STREAM)
    config = CleanConfig()
    rows: dict[str, list[Any]] = {k: [] for k in ("event_id", "source", "type", "timestamp", "payload")}

    def add(source: str, record: dict[str, Any], raw: bytes, parser: Any) -> None:
        try:
            parsed = parser(record, checksum(raw))
        except ValueError:
            return
        if content_problem(parsed.payload):
            return
        if start <= parsed.timestamp < end:
            # The payload text exactly as the lander writes it.
            payload = json.dumps(parsed.payload, separators=(",", ":"), sort_keys=True)
            for key, value in zip(
                rows, (parsed.event_id, source, parsed.type, parsed.timestamp, payload), strict=True
            ):
                rows[key].append(value)

    for record, raw, _ in read_records(files.trades, "jsonl", []):
        if record is not None:
            add(TRADE_SOURCE, record, raw, trade_parser)
    for record, raw, _ in read_records(files.news, "csv", []):
        if record is not None:
            add(NEWS_STREAM, record, raw, news_parser)
    ms = pl.Datetime("ms", "UTC")
    frame = pl.DataFrame(rows, schema_overrides={"timestamp": ms})
    clean, _ = clean_frame(frame.with_columns(pl.col("timestamp").alias("ingest_time")), timedelta(minutes=1), config)
    return clean.sort("timestamp", "event_id")
