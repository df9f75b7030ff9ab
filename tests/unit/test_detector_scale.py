"""The calibrated detectors at any scale of the data: exact findings on one seeded series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from qraft_core.detectors.calibrated import CalibratedAnomaly, CalibratedDrift

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _series(scale: float) -> list[float]:
    """600 one-minute bars of Gaussian noise, an 8-sigma level shift at 05:00 and a spike at 07:30,
    all times `scale`."""
    values = np.random.default_rng(7).normal(0.0, 1.0, 600)
    values[300:] += 8.0
    values[450] += 12.0
    return [float(v) * scale for v in values]


def _found(values: list[float]) -> list[tuple[str, str]]:
    """(onset, kind) of the drift detector's findings on the bars' means and of the anomaly
    detector's on their maxima, the bars' values being `values`."""
    bars = pl.DataFrame({"bar_time": [T0 + timedelta(minutes=i) for i in range(len(values))],
                         "reading_mean": values, "reading_max": values})
    found = CalibratedDrift("shifts", "sensor", ["reading_mean"]).update(bars)
    found += CalibratedAnomaly("spikes", "sensor", ["reading_max"]).update(bars)
    return [(s.onset.strftime("%H:%M"), s.type) for s in found]


def test_the_series_at_scale_one() -> None:
    assert _found(_series(1.0)) == [("05:00", "concept_drift"), ("05:00", "anomaly"), ("07:30", "anomaly")]


@pytest.mark.parametrize("scale", [1e-12, 1e-30, 1e-140, 1e140])
def test_findings_do_not_depend_on_the_scale(scale: float) -> None:
    # The spread's floor was at least 1e-9 in absolute terms: at 1e-12 only the spike was found,
    # at 1e-20 nothing, and from 1e-30 on the drift detector divided by zero on every bar.
    assert _found(_series(scale)) == _found(_series(1.0))


def test_subnormal_values_do_not_break_the_detectors() -> None:
    values = _series(1.0)
    values[100], values[200] = 1e-320, -3e-310
    assert _found(values) == _found(_series(1.0))
    # A stream of subnormal values only (below the smallest spread a baseline assumes): nothing.
    assert _found([1e-320 * (i % 3) for i in range(600)]) == []


def test_a_constant_stream_finds_nothing_in_float_noise() -> None:
    # At 0.1, one bar 1.4e-17 higher (the mean of values that do not add up exactly): its score is
    # a tiny fraction of the floor, not a tail probability of 1e-60 (found before: an anomaly).
    values = [0.1] * 600
    values[400] += 1.4e-17
    assert _found(values) == []
    # Zeros are counts until a value is not: the recent zeros, rebuilt on the raw scale, came back
    # as -5.4e-17, and the zeros after a bar of 1e-17 read as a level shift up from there. A bar
    # off a stream that never moved is extreme at any size, as a bar of 1 is.
    values = [0.0] * 600
    values[400] = 1e-17
    assert _found(values) == [("06:40", "anomaly")]
    values[400] = 1.0
    assert _found(values) == [("06:40", "anomaly")]
