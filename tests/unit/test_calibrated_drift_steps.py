"""CalibratedDrift: what its cards say about the changes it finds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from qraft_core.detectors.calibrated import CalibratedDrift

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _cycle_with_steps(seed: int) -> pl.DataFrame:
    """Six days of 5-minute bars on a daily cycle of +-10 (noise 1): 5 lower from Thursday 18:00,
    the trough, and 5 higher again from Friday 06:00, the crest."""
    rng = np.random.default_rng(seed)
    index = np.arange(288 * 6)
    values = 50 + 10 * np.sin(2 * np.pi * index / 288) + rng.normal(0.0, 1.0, index.size)
    values[288 * 3 + 216:] -= 5.0
    values[288 * 4 + 72:] += 5.0
    return pl.DataFrame({"bar_time": [T0 + int(i) * timedelta(minutes=5) for i in index], "value_mean": values})


def test_a_drift_card_on_a_seasonal_stream_tells_the_direction_its_figures_show() -> None:
    # The card compared the expected value at the alarm's time of day (daily cycle included) with
    # the mean since the change less its cycle: at the trough "40.76 (before) | 45.12 (since);
    # level went down". Both figures are now the readings' means over the bars after the change,
    # before it at the old level, so they move the way the words say.
    cards = [(s.onset.strftime("%a %H:%M"), s.prev_state, s.new_state)
             for seed in (1, 4, 5) for s in CalibratedDrift("d", "s", ["value_mean"]).update(_cycle_with_steps(seed))]
    assert [onset for onset, _, _ in cards] == ["Thu 18:00", "Fri 06:00"] * 3
    for _, before, after in cards:
        before_level = float(re.search(r"value_mean ≈ ([-\d.e+]+)", before).group(1))
        after_level = float(re.search(r"value_mean ≈ ([-\d.e+]+)", after).group(1))
        assert after.endswith("level went up" if after_level > before_level else "level went down"), (before, after)
