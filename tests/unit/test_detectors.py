"""Detectors on seeded synthetic bars: exact findings, state round trips, reset, params."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from qraft_core.detectors.base import (
    DetectorParamsError,
    StreamDetector,
    decode_state,
    encode_state,
)
from qraft_core.detectors.calibrated import CalibratedAnomaly, CalibratedDrift
from qraft_core.detectors.capymoa_engine import (
    CapyADWIN,
    CapyCUSUM,
    CapyHalfSpaceTrees,
    capymoa_available,
)
from qraft_core.detectors.itemsets import FrequentItemsets
from qraft_core.detectors.river_engine import (
    DBStreamRegimes,
    RiverADWIN,
    RiverHalfSpaceTrees,
    RiverKSWIN,
    RiverPageHinkley,
    RobustZScore,
)
from qraft_core.detectors.synthetic import BAR, START, synthetic_features

BARS = synthetic_features(n_bars=600, seed=7, vol_shift_at=300, spikes_at=(200, 450), regime_at=400,
                          news_burst_at=350)
BTC = BARS.filter(pl.col("stream") == "binance_spot:BTCUSDT")
NEWS = BARS.filter(pl.col("stream") == "news")
VOL = ["realized_vol"]
SHAPE = ["log_return_z", "volume_z", "mean_size_z"]
REGIME = ["realized_vol", "volume", "mean_size", "buy_ratio"]

needs_capymoa = pytest.mark.skipif(not capymoa_available(), reason="CapyMOA/JVM not available")

# (class, features, params, bars, expected (bar index, group) of every signal)
CASES: list[tuple[type[StreamDetector], list[str], dict[str, Any], pl.DataFrame, list[tuple[int, str]]]] = [
    (RiverADWIN, VOL, {"transform": "log"}, BTC, [(310, "")]),
    (RiverPageHinkley, VOL, {"transform": "log", "threshold": 8.0, "delta": 0.1}, BTC, [(307, "")]),
    (RiverKSWIN, VOL, {"transform": "log", "alpha": 0.0001}, BTC, [(312, "")]),
    (RiverHalfSpaceTrees, SHAPE, {"threshold": 0.9}, BTC, [(150, ""), (153, ""), (200, ""), (400, ""), (450, "")]),
    (DBStreamRegimes, REGIME, {"clustering_threshold": 1.0, "jump_distance": 3.0, "persistence": 6}, BTC,
     [(306, ""), (415, "")]),
    (FrequentItemsets, [], {"recent_bars": 12}, NEWS, [(371, "approval+etf")]),
    (CalibratedDrift, VOL, {}, BTC, [(302, "")]),  # 303 before the least-squares jump
    (CalibratedAnomaly, ["log_return", "volume"], {}, BTC, [(203, "")]),
]
CAPY_CASES = [
    (CapyADWIN, VOL, {"transform": "log"}, BTC, [(319, ""), (351, "")]),
    (CapyCUSUM, VOL, {"transform": "log", "lambda_": 8.0, "delta": 0.1}, BTC, [(307, "")]),
    (CapyHalfSpaceTrees, SHAPE, {"threshold": 0.6}, BTC, [(120, ""), (158, ""), (200, ""), (405, ""), (450, "")]),
]
ALL = [pytest.param(*case, id=case[0].__name__) for case in CASES] + [
    pytest.param(*case, id=case[0].__name__, marks=needs_capymoa) for case in CAPY_CASES
]


def bar_index(signal: Any) -> int:
    return int((signal.time - START) / BAR)


@pytest.mark.parametrize(("cls", "features", "params", "bars", "expected"), ALL)
def test_exact_findings_on_seeded_bars(cls, features, params, bars, expected) -> None:
    signals = cls("d", "binance_spot:BTCUSDT", features, params).update(bars)
    assert [(bar_index(s), s.group) for s in signals] == expected
    for signal in signals:
        assert 0.0 <= signal.confidence <= 1.0
        assert signal.engine == cls.engine
        assert signal.fields and abs(sum(signal.fields.values()) - 1.0) < 1e-5


def test_volatility_step_at_bar_300_is_found_after_it_by_every_drift_detector() -> None:
    for cls, *_, expected in [*CASES[:3], *(CAPY_CASES[:2] if capymoa_available() else [])]:
        first = expected[0][0]
        assert 300 <= first <= 320, cls.__name__
    signal = RiverADWIN("d", "s", VOL, {"transform": "log"}).update(BTC)[0]
    assert signal.type == "concept_drift"
    assert signal.fields == {"realized_vol": 1.0}
    # The change point is located in the recent bars: 11 bars before the detection at bar 310.
    assert signal.lag_bars == 11
    assert signal.prev_state == "realized_vol ≈ 0.0009935 (mean before the change)"
    assert signal.new_state == "realized_vol ≈ 0.003083 (mean of the last 11 bars)"
    assert signal.confidence > 0.9


def test_anomaly_signal_names_the_spiking_field() -> None:
    spike = [s for s in RobustZScore("d", "s", ["log_return", "volume"]).update(BTC) if bar_index(s) == 200][0]
    assert max(spike.fields, key=spike.fields.__getitem__) in {"log_return", "volume"}
    assert spike.new_state.startswith("observed: ")


@pytest.mark.parametrize(("cls", "features", "params", "bars", "expected"), ALL)
def test_state_round_trip_continues_exactly(cls, features, params, bars, expected) -> None:
    whole = cls("d", "s", features, params, seed=3).update(bars)
    first = cls("d", "s", features, params, seed=3)
    half = bars.height // 2
    part = first.update(bars.head(half))
    stored = encode_state(first.get_state())
    restored = cls.from_state(decode_state(stored), "d", "s", features, params, seed=3)
    part += restored.update(bars.tail(bars.height - half))
    assert [s.to_json() for s in part] == [s.to_json() for s in whole]


@pytest.mark.parametrize(("cls", "features", "params", "bars", "expected"), ALL)
def test_reset_forgets_everything(cls, features, params, bars, expected) -> None:
    detector = cls("d", "s", features, params)
    first = detector.update(bars)
    detector.reset()
    assert [s.to_json() for s in detector.update(bars)] == [s.to_json() for s in first]


def test_hyperparameters_are_stored_as_given_and_checked() -> None:
    given = {"delta": 0.01}
    detector = RiverADWIN("d", "s", VOL, given)
    assert detector.params == {"delta": 0.01}
    assert detector.params is not given
    assert detector.effective_params["delta"] == 0.01
    assert detector.effective_params["grace_period"] == 10
    with pytest.raises(DetectorParamsError, match="RiverADWIN does not accept threshold"):
        RiverADWIN("d", "s", VOL, {"threshold": 1})
    with pytest.raises(DetectorParamsError, match=r"params.transform: expected one of none, log \(got .sqrt.\)"):
        RiverADWIN("d", "s", VOL, {"transform": "sqrt"})


def test_seeded_trees_repeat_and_seed_matters() -> None:
    def run(seed: int) -> list[int]:
        return [bar_index(s) for s in RiverHalfSpaceTrees("d", "s", SHAPE, {"threshold": 0.9}, seed).update(BTC)]

    assert run(42) == run(42) == [150, 153, 200, 400, 450]
    assert run(7) != run(42)


def test_missing_feature_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="detector d: bars lack feature columns nope"):
        RiverADWIN("d", "s", ["nope"]).update(BTC)


def test_itemset_signal_carries_support_and_lift() -> None:
    signal = FrequentItemsets("d", "news", [], {"recent_bars": 12}).update(NEWS)[0]
    assert signal.type == "freq_pattern"
    assert set(signal.fields) == {"approval", "etf"}
    assert signal.extra["count"] == 4.0
    assert signal.extra["lift"] >= 2.0 and signal.extra["p_value"] <= 1e-3
    assert signal.extra["support"] == pytest.approx(4 / 12, abs=1e-6)


def test_state_encoding_is_tagged() -> None:
    assert encode_state({"a": [1, 2]}).startswith("json:")
    assert decode_state(encode_state({"a": [1, 2]})) == {"a": [1, 2]}
    assert encode_state(b"x").startswith("pickle:")
    with pytest.raises(ValueError, match="unknown detector state encoding 'yaml'"):
        decode_state("yaml:a: 1")


@needs_capymoa
def test_capymoa_history_rebuilds_keep_restored_runs_exact() -> None:
    params = {"transform": "log", "max_history": 100, "keep_history": 50}
    whole = CapyADWIN("d", "s", VOL, params).update(BTC)
    detector = CapyADWIN("d", "s", VOL, params)
    found = []
    for start in range(0, BTC.height, 70):
        found += detector.update(BTC.slice(start, 70))
        state = detector.get_state()
        assert isinstance(state, dict) and len(state["history"]) < 100
        detector = CapyADWIN.from_state(decode_state(encode_state(state)), "d", "s", VOL, params)
    assert state["dropped"] == 550
    assert [s.to_json() for s in found] == [s.to_json() for s in whole]
    # Rebuilt every 50 inputs from the last 50, ADWIN sees a shorter past than unbounded (319).
    assert [bar_index(s) for s in whole] == [345]


def _sleeping_counts(days: int, shift_at: int | None = None) -> pl.DataFrame:
    """5-minute request counts: a daily cycle whose nights are mostly zeros (seeded Poisson)."""
    import math
    from datetime import UTC, datetime, timedelta

    import numpy as np

    rng = np.random.default_rng(7)
    n = days * 288
    rate = [max(0.0, 12.0 * math.sin(2 * math.pi * i / 288)) + 0.2 for i in range(n)]
    if shift_at is not None:
        rate = [r + (25.0 if i >= shift_at else 0.0) for i, r in enumerate(rate)]
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(minutes=5 * i) for i in range(n)],
                         "requests_mean": rng.poisson(rate).astype(float)})


def test_calibrated_drift_on_counts_that_sleep_at_night() -> None:
    # Three days of a count that is zero most nights: its spread follows its level (square-root
    # scale, resolution floor). What remains are moves of the daily cycle before it is trusted
    # that are jumps in the bar-to-bar noise (smooth ones are not level shifts), each once: the same
    # move a day later (07 00:25) is the daily cycle.
    # One more such move on the first day (05 11:45) since the drift test's calibration changes
    # (alarm level before calibration, first tail fit, least-squares jump; not found before them).
    found = CalibratedDrift("d", "web", ["requests_mean"]).update(_sleeping_counts(3))
    # The morning rise of the second day (06 11:25) is no longer reported: the hourly means
    # stepped as much a day before (`_stepped_before`).
    quiet = ["05 11:45", "06 00:30"]
    assert [s.onset.strftime("%d %H:%M") for s in found] == quiet
    # The same stream with its rate up by 25 from the third day at 08:20: the shift is dated there.
    shifted = CalibratedDrift("d", "web", ["requests_mean"]).update(_sleeping_counts(3, shift_at=2 * 288 + 100))
    added = [(s.onset.strftime("%d %H:%M"), s.new_state.endswith("level went up")) for s in shifted
             if s.onset.strftime("%d %H:%M") not in quiet]
    assert added[0] == ("07 08:20", True)


def test_calibrated_drift_on_a_reading_stuck_at_one_value() -> None:
    # A gauge read to one decimal: noisy for 10 hours, then stuck at 20.0, then one step to 20.1.
    # The stall is one narrower spread (the spread cannot narrow below the reading's resolution,
    # so it is not reported again and again), and the single step is a level shift dated there.
    from datetime import UTC, datetime, timedelta

    import numpy as np

    rng = np.random.default_rng(4)
    values = np.where(np.arange(2000) < 600, np.round(20 + rng.normal(0, 0.3, 2000), 1), 20.0)
    values[1200:] = 20.1
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(2000)], "gauge_mean": values})
    found = CalibratedDrift("d", "gauge", ["gauge_mean"]).update(bars)
    assert [(s.onset.strftime("%H:%M"), s.new_state.rsplit("; ", 1)[1]) for s in found] == [
        ("10:00", "spread went narrower"), ("20:00", "level went up")]
    assert CalibratedAnomaly("a", "gauge", ["gauge_mean"]).update(bars) == []


def _five_minute_cycle(n: int, amplitude: float, seed: int) -> tuple[list, np.ndarray]:
    """Times and values of a 5-minute metric with a daily cycle and unit noise (seeded)."""
    from datetime import UTC, datetime, timedelta

    rng = np.random.default_rng(seed)
    t0 = datetime(2014, 2, 14, tzinfo=UTC)
    times = [t0 + timedelta(minutes=5 * i) for i in range(n)]
    return times, amplitude * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)


def test_calibrated_anomaly_reports_an_extreme_excursion_at_its_first_bar() -> None:
    # A daily cycle of +-10, a burst of +25 for 10 bars at bar 3000 and a lasting +8 at bar 3500.
    # The burst stays up for longer than the confirmation, yet a first bar that extreme is an
    # anomaly there (not 8 bars later, once the baseline had moved up to it); the +8 is a level
    # shift, left to the drift detector.
    times, values = _five_minute_cycle(4032, 10.0, seed=12)
    values[3000:3010] += 25
    values[3500:] += 8
    bars = pl.DataFrame({"bar_time": times, "value_max": values, "value_min": values})
    found = CalibratedAnomaly("a", "cpu", ["value_max", "value_min"]).update(bars)
    assert [(times.index(s.onset), s.lag_bars) for s in found] == [(3000, 3)]


def test_calibrated_anomaly_remembers_a_daily_event_seen_in_its_warm_up() -> None:
    # 15-minute bars with a +10 spike at 07:00 every day: the first one falls in the warm-up (60
    # bars), so the second, a day later, is the same seasonal event, not an anomaly.
    from datetime import UTC, datetime, timedelta

    rng = np.random.default_rng(3)
    values = 50 + rng.normal(0, 1, 3 * 96)
    values[[28, 28 + 96, 28 + 192]] += 10
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=15 * i) for i in range(3 * 96)],
                         "load_max": values, "load_min": values})
    assert CalibratedAnomaly("a", "host", ["load_max", "load_min"]).update(bars) == []


def test_calibrated_drift_needs_a_jump_not_a_smooth_move() -> None:
    # The first day of a 5-minute metric with a daily cycle of +-3 (not yet profiled) and a +5
    # step at bar 200: the cycle's smooth swings raise the level CUSUM too (bars 95, 168, 247
    # without the jump test), but only the step is a jump in the bar-to-bar noise. (A +4 step was
    # found too until the level tests alarmed at the bound for independent scores, 15.35, before
    # their excursions calibrate them, instead of at 12: the price of fewer early false findings.)
    times, values = _five_minute_cycle(288, 3.0, seed=1)
    values[200:] += 5
    bars = pl.DataFrame({"bar_time": times, "load_mean": values})
    found = CalibratedDrift("d", "host", ["load_mean"]).update(bars)
    assert [(times.index(s.onset), s.new_state.rsplit("; ", 1)[1]) for s in found] == [(200, "level went up")]
