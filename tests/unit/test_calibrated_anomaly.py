"""CalibratedAnomaly and the calibrated detectors' shared parts on seeded streams: exact findings."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl

from qraft_core.demo.corpus import Stream, make_stream
from qraft_core.detectors.calibrated import CalibratedAnomaly, CalibratedDrift, TailModel


def _columns(stream: Stream, *suffixes: str) -> list[str]:
    return [c for c in stream.bars.columns if c.endswith(suffixes)]


def _anomalies(stream: Stream, bars: int) -> list[str]:
    """Anomalies found in the stream's first `bars` bars."""
    detector = CalibratedAnomaly("spikes", stream.name, _columns(stream, "_max", "_min"))
    return [s.finding_time.strftime("%a %H:%M:%S") for s in detector.update(stream.bars.head(bars))]


def test_a_daily_spike_the_profile_partly_learnt_is_a_recurrence() -> None:
    # 15-minute readings with an unlabelled daily spike at 01:45. The daily profile learns part of
    # it, so on the first days it is beyond `clip` scales but not extreme; on Saturday it was
    # extreme again, and reported (found then: Sat 01:45:00). Notable bars at that time on earlier
    # days make it a recurrence.
    stream = make_stream(8, "nothing", 3000, 11)
    assert (stream.name, stream.truth) == ("nothing-008-gauss-900s", [])
    assert _anomalies(stream, 600) == []


def test_minima_of_counts_are_scored_on_their_resolution() -> None:
    # Per-bar minima of ten counts a second: mostly 0 or 1, so the tail's running quantiles sit
    # inside one step and measured a tail a few hundredths of a step wide; a minimum of 3 then had
    # a tail probability of 1e-7 (found then: ten anomalies, six of them outside every labelled
    # window). Quantiles at least a step apart give three steps the probability they have.
    stream = make_stream(13, "drift", 3000, 23)
    assert stream.name == "drift-013-counts-1s"
    assert _anomalies(stream, 2000) == []


def test_tail_quantiles_inside_one_step_of_a_quantized_score() -> None:
    tail = TailModel(0.9, 500)
    for i in range(400):
        tail.learn(2.0 if i % 20 in (0, 7, 13) else 0.0)  # 15% of the scores one step (2.0) up
    assert tail.p_value(4.0) == 0.0  # the three quantiles coincide: a tail of no width
    # One step beyond the quantiles halves the tail share (0.1), each further step halves it again.
    assert round(tail.p_value(4.0, resolution=2.0), 6) == 0.05
    assert round(tail.p_value(12.0, resolution=2.0), 6) == 0.003125


def test_no_finding_is_dated_inside_the_warm_up() -> None:
    # 5-minute quantized readings with a daily cycle, from Monday 00:00. The drift test's baseline
    # is still following the cycle when its warm-up ends (its 121st bar with a value, 10:15): the
    # CUSUM built up then raised a level drift dated 07:45 (found then: 07:45 and 17:35). It
    # re-anchors on it, and reports nothing dated before 10:15. (The move at 17:35, found before,
    # is the cycle too: nothing is planted in this stream before bar 400. Its statistic reached
    # 12 to 14, under the level for independent scores that holds until excursions calibrate it.)
    stream = make_stream(9, "drift", 3000, 5)
    detector = CalibratedDrift("shifts", stream.name, _columns(stream, "_mean"))
    found = [s.finding_time.strftime("%H:%M") for s in detector.update(stream.bars.head(300))]
    assert datetime.fromtimestamp(detector.state["warm_s"], UTC).strftime("%H:%M") == "10:15"
    assert found == []


def test_the_first_activity_after_a_run_of_zeros_is_told_in_readable_scales() -> None:
    # After zeros the scale is the smallest spread (1e-150), so the first non-zero maximum is
    # 2e151 scales away; the card printed all 152 digits of it.
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    jobs = [0.0] * 200 + [19.88] + [0.0] * 10
    bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(len(jobs))], "jobs_max": jobs})
    found = CalibratedAnomaly("spikes", "batch", ["jobs_max"]).update(bars)
    assert [s.new_state for s in found] == ["observed: jobs_max = 19.88 (+1.99e+151 scales, tail probability 0)"]


def _gaussian_bars(seed: int, bars: int, spikes: dict[int, float]) -> pl.DataFrame:
    """1-minute maxima and minima of N(50, 1) noise, with `spikes` (bar: size in sigmas) added."""
    rng = random.Random(seed)
    values = [rng.gauss(50.0, 1.0) + spikes.get(i, 0.0) for i in range(bars)]
    t0 = datetime(2024, 6, 3, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(bars)],
                         "value_max": values, "value_min": values})


def _anomaly_bars(bars: pl.DataFrame) -> list[int]:
    detector = CalibratedAnomaly("spikes", "noise", ["value_max", "value_min"])
    t0 = bars["bar_time"][0]
    return [int((s.finding_time - t0).total_seconds() // 60) for s in detector.update(bars)]


def test_one_earlier_spike_at_the_same_time_of_day_is_no_pattern() -> None:
    # Two unrelated 12-sigma spikes three days apart at the same minute: one earlier extreme
    # at that time of day made the second a seasonal recurrence (found then: only bar 2000).
    later = 2000 + 3 * 1440
    assert _anomaly_bars(_gaussian_bars(2, later + 100, {2000: 12.0, later: 12.0})) == [2000, later]


def test_an_hourly_reset_is_a_daily_recurrence_after_a_day() -> None:
    # A batch backlog reset every hour (a sawtooth of 100 with noise 2, 1-minute bars). Once its
    # resets turn extreme, each one has come at that time of the day before: only the last 32
    # extreme or notable bars were kept, ten hours here, and every hour was reported for a day
    # (found then: 22 anomalies on this seed, from bar 10140). They are now remembered for two weeks.
    rng = random.Random(1)
    values = [100.0 * (i % 60) / 60 + rng.gauss(0.0, 2.0) for i in range(12_000)]
    t0 = datetime(2024, 6, 3, tzinfo=UTC)
    bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(len(values))],
                         "value_max": values, "value_min": values})
    assert len(_anomaly_bars(bars)) <= 2
