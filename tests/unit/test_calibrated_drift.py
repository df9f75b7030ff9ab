"""CalibratedDrift on seeded autocorrelated series and counts: exact findings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from qraft_core.detectors.calibrated import (
    CalibratedDrift,
    SeasonalBaseline,
    TailModel,
    _detrended,
    _lag_one,
    _step_estimate,
)


def _ar1(n: int, seed: int, shift_at: int | None = None, narrow_at: int | None = None,
         bar: timedelta = timedelta(minutes=1), shift: float = 4.0) -> pl.DataFrame:
    """A metric of `bar` bars whose noise is AR(1) with lag-1 autocorrelation 0.8 (spread 1), plus
    `shift` from `shift_at` on, a third as wide from `narrow_at` on."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.6, n)
    noise = np.empty(n)
    noise[0] = shocks[0]
    for i in range(1, n):
        noise[i] = 0.8 * noise[i - 1] + shocks[i]
    if shift_at is not None:
        noise[shift_at:] += shift
    if narrow_at is not None:
        noise[narrow_at:] /= 3.0
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + i * bar for i in range(n)], "load_mean": 20 + noise})


def _found(bars: pl.DataFrame) -> list[tuple[str, str]]:
    return [(s.onset.strftime("%H:%M"), s.new_state.rsplit("; ", 1)[1])
            for s in CalibratedDrift("d", "host", ["load_mean"]).update(bars)]


def test_the_jump_test_knows_autocorrelated_noise() -> None:
    # The means of a few bars of AR(1) noise wander further than its bar-to-bar differences say:
    # the wander at 05:54 passed the jump test measured as if the bars were independent (found
    # then: 05:54 up, 09:47 down), and so did the wander at 09:47 while the autocorrelation was
    # measured without the bias of short runs (next test). The +4 at 16:40 is found and dated there.
    assert _found(_ar1(1500, seed=1)) == []
    assert _found(_ar1(1500, seed=1, shift_at=1000)) == [("16:40", "level went up")]
    # Noise alone, other seeds: found before 04:07 up and 04:58 down (seed 3), 05:57 down (seed 4,
    # then 02:03 up instead), 10:19 up (seed 7). The 02:03 wander alarmed at 12 while the
    # autocorrelation, averaged from zero at the slow rate, still read low: it is now averaged
    # plainly at first, and the level holds at the bound for independent scores (15.35) until
    # excursions calibrate it. The step is estimated by generalized least squares (next tests).
    # On seeds 1 to 20, noise alone now gives two findings, both on seed 8 (16 before).
    assert {seed: _found(_ar1(1500, seed=seed)) for seed in range(1, 21) if _found(_ar1(1500, seed=seed))} == {
        8: [("05:02", "level went down"), ("09:55", "level went down")]}
    assert _found(_ar1(1500, seed=7, shift_at=1000)) == [("16:40", "level went up")]


def test_a_smaller_shift_of_autocorrelated_noise_is_a_jump() -> None:
    # A +3 (three spreads of AR(0.8) noise, five of its innovations) at 16:40: the difference of the
    # means of 8 bars a side, 0.88 spreads of standard error, took it for the noise's wander on most
    # seeds (found on 11 of seeds 1 to 30). Estimated by generalized least squares, it is a jump
    # on 13 of them, each dated where it happened.
    found = [seed for seed in range(1, 31)
             if _found(_ar1(1500, seed=seed, shift_at=1000, shift=3.0)) == [("16:40", "level went up")]]
    assert found == [5, 6, 9, 12, 13, 15, 16, 20, 22, 24, 27, 28, 29]


def test_the_autocorrelation_of_a_few_bars_about_a_line_is_corrected_for_its_bias() -> None:
    # The lag-1 autocorrelation of n bars less their least-squares line is low by about
    # (2 + 6 rho) / n: runs of 20 bars of AR(0.8) noise read 0.47 on average, which made the jump
    # test take their wander for a jump. Corrected, 0.70 (the first-order correction, on 400 pairs).
    rng = np.random.default_rng(7)

    def run() -> list[float]:
        shocks = rng.normal(0.0, 0.6, 20)
        noise = [float(shocks[0])]
        for shock in shocks[1:]:
            noise.append(0.8 * noise[-1] + float(shock))
        return _detrended(noise)

    estimates = [_lag_one([run(), run()]) for _ in range(400)]
    assert round(float(np.mean(estimates)), 2) == 0.7


def test_a_narrower_spread_of_autocorrelated_noise() -> None:
    # At lag-1 autocorrelation 0.8 the damped residuals could not narrow the CUSUM at all (a step
    # of at most 0.33 less the allowance 0.4): the spread cut to a third at 16:40 went unseen. The
    # innovations show it, dated there; the same noise without the cut gives no finding.
    assert _found(_ar1(1500, seed=3)) == []
    assert _found(_ar1(1500, seed=3, narrow_at=1000)) == [("16:40", "spread went narrower")]


def test_the_standard_error_of_a_jump_in_ar1_noise() -> None:
    # Independent bars: the difference of the means of 8 bars a side, sqrt(2 / 8). At lag-1
    # autocorrelation 0.8 that difference had a standard error of 0.88 spreads; the generalized
    # least-squares estimate, which weighs most the two bars beside the split, has 0.59.
    weights, standard_error = _step_estimate(16, 8, 0.0)
    assert [round(w, 4) for w in weights] == [-0.125] * 8 + [0.125] * 8
    assert round(standard_error, 4) == 0.5
    weights, standard_error = _step_estimate(16, 8, 0.8)
    assert round(standard_error, 4) == 0.5883
    assert [round(w, 3) for w in weights[6:10]] == [-0.019, -0.788, 0.788, 0.019]
    # The estimate is unbiased: a step of 1 reads 1, a level alone reads 0.
    assert round(sum(weights[8:]), 6) == 1.0 and round(sum(weights), 6) == 0.0


def _night_and_day_counts(days: int, seed: int) -> pl.DataFrame:
    """5-minute request counts (Poisson) whose rate follows a daily cycle from 15 by day down to
    0.05 at night."""
    rng = np.random.default_rng(seed)
    hours = np.arange(288 * days) / 12.0
    rate = np.clip(6.0 + 9.0 * np.sin(2 * np.pi * hours / 24), 0.05, None)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(minutes=5 * i) for i in range(len(hours))],
                         "load_mean": rng.poisson(rate).astype(float)})


def test_counts_near_zero_do_not_narrow() -> None:
    # Where fewer than one count is expected (the night), the square root of counts no longer has
    # the spread of the day: the evening's fall towards zero was reported as a narrower spread
    # (Mon 18:40, which also re-anchored the baseline and moved the level findings after it). The
    # level findings are jumps of the first days' cycle, not yet profiled (Mon 10:35 down, 21:25
    # and 22:00 up before the level for independent scores held the first excursions; now Mon
    # 22:15 up; Wed 18:15 down until the hourly means showed the same fall on the days before).
    assert _found(_night_and_day_counts(4, seed=6)) == [("22:15", "level went up")]


def _weekend_dips(weeks: int, seed: int, shift_at: datetime | None = None) -> pl.DataFrame:
    """A 15-minute metric (noise of spread 1) 4 lower on Saturdays and Sundays, plus 5 from
    `shift_at` on."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    times = [t0 + timedelta(minutes=15 * i) for i in range(96 * 7 * weeks)]
    level = [(-4.0 if t.weekday() >= 5 else 0.0) + (5.0 if shift_at and t >= shift_at else 0.0) for t in times]
    return pl.DataFrame({"bar_time": times, "load_mean": 50 + np.array(level) + rng.normal(0, 1, len(times))})


def _found_on(bars: pl.DataFrame) -> list[tuple[str, str]]:
    return [(s.onset.strftime("%a %d %H:%M"), s.new_state.rsplit("; ", 1)[1])
            for s in CalibratedDrift("d", "host", ["load_mean"]).update(bars)]


def test_a_level_change_a_week_after_the_same_one_is_the_weekly_cycle() -> None:
    # The first weekend is a change; the next ones, at the same time of the week and in the same
    # direction, recur (found before: Sat 17 down, Mon 19 up, Sat 24 down as well).
    assert _found_on(_weekend_dips(3, seed=1)) == [("Sat 10 00:00", "level went down"),
                                                   ("Mon 12 00:00", "level went up")]
    # A shift at another time is still found.
    shifted = _weekend_dips(3, seed=1, shift_at=datetime(2026, 1, 14, 12, tzinfo=UTC))
    assert _found_on(shifted) == [("Sat 10 00:00", "level went down"), ("Mon 12 00:00", "level went up"),
                                  ("Wed 14 12:00", "level went up")]


def _weekends_from_friday_noon(seed: int, shift_at: datetime | None = None) -> pl.DataFrame:
    """Three weeks of a 15-minute metric from a Friday noon (so the first weekend falls in the
    warm-up), 3 lower on Saturdays and Sundays, plus 4 from `shift_at` on."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 9, 12, tzinfo=UTC)
    times = [t0 + timedelta(minutes=15 * i) for i in range(96 * 7 * 3)]
    level = [(-3.0 if t.weekday() >= 5 else 0.0) + (4.0 if shift_at and t >= shift_at else 0.0) for t in times]
    return pl.DataFrame({"bar_time": times, "load_mean": 50 + np.array(level) + rng.normal(0, 1, len(times))})


def test_a_weekly_step_that_never_alarmed_before_is_the_weekly_cycle() -> None:
    # The first weekend starts in the warm-up: no finding to recur. Its end (Mon 12) is a change;
    # the second weekend's start (found before: Sat 17 00:00, down) stepped as much at the same
    # hour a week before, in the hourly means.
    assert _found_on(_weekends_from_friday_noon(seed=2)) == [("Mon 12 00:00", "level went up")]
    # A shift on a Saturday morning is still found: a week before, the hourly means did not step.
    shifted = _weekends_from_friday_noon(seed=2, shift_at=datetime(2026, 1, 24, 9, tzinfo=UTC))
    assert _found_on(shifted) == [("Mon 12 00:00", "level went up"), ("Sat 24 09:00", "level went up")]


def _daily_cycle(days: int, seed: int, shift_at: int | None = None) -> pl.DataFrame:
    """A 15-minute metric on a daily cycle of +-4 (noise of spread 1), plus 4 from bar `shift_at` on."""
    rng = np.random.default_rng(seed)
    n = 96 * days
    values = 30 + 4 * np.sin(2 * np.pi * np.arange(n) / 96) + rng.normal(0, 1, n)
    if shift_at is not None:
        values[shift_at:] += 4.0
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(minutes=15 * i) for i in range(n)], "load_mean": values})


def test_a_steep_stretch_of_a_cycle_is_not_a_jump() -> None:
    # Before the daily profile is trusted, the cycle's steepest stretch moved the means of 8 bars
    # either side of the change point as far as a jump would (found then: Tue 12:00 down); the
    # slope within the sides explains it. No level finding remains. Known cost of reading the
    # autocorrelation right from the start: the residuals of a cycle not yet profiled read 0.9,
    # which damps the level steps, so the shift of 4 on the third day (found before, Wed 07
    # 14:30) is not found; and with no level alarms resetting the statistics early, the
    # narrower statistic on the innovations reaches its level on Wed 05:30.
    assert _found_on(_daily_cycle(4, seed=2)) == [("Wed 07 04:00", "spread went narrower")]
    assert _found_on(_daily_cycle(4, seed=2, shift_at=250)) == [("Wed 07 04:00", "spread went narrower")]


def test_a_weekly_step_recurs_as_a_level_or_a_spread_change() -> None:
    # Weekends three times as noisy: the first one's start shows as a level change (Sat 10 00:30,
    # down), the next ones' as a wider spread at the same time of the week (found before: Sat 17
    # 00:00 and Sat 24 00:15, spread went wider). The ends, narrower spreads dated hours apart, do
    # not recur within the tolerance.
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    times = [t0 + timedelta(minutes=15 * i) for i in range(96 * 7 * 3)]
    spread = np.array([3.0 if t.weekday() >= 5 else 1.0 for t in times])
    bars = pl.DataFrame({"bar_time": times, "load_mean": 50 + spread * rng.normal(0, 1, len(times))})
    assert _found_on(bars) == [("Sat 10 00:30", "level went down"), ("Mon 12 14:15", "spread went narrower"),
                               ("Mon 19 00:15", "spread went narrower")]


def _hourly(seed: int, narrow_at: int | None = None, shift_at: int | None = None) -> pl.DataFrame:
    """An hourly metric: a daily cycle of +-3, a daily one-hour +10 at 18:00 and unit noise, a
    third as wide from `narrow_at` on, plus 1.5 from `shift_at` on."""
    rng = np.random.default_rng(seed)
    hours = np.arange(2000)
    noise = rng.normal(0.0, 1.0, hours.size)
    if narrow_at is not None:
        noise[narrow_at:] /= 3.0
    values = 50 + 3 * np.sin(2 * np.pi * hours / 24) + np.where(hours % 24 == 18, 10.0, 0.0) + noise
    if shift_at is not None:
        values[shift_at:] += 1.5
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(hours=int(i)) for i in hours], "load_mean": values})


def test_hourly_bars_sit_on_the_daily_knots() -> None:
    # With knots mid-hour, every hourly bar read the mean of two knots: the 18:00 event leaked into
    # 17:00 and 19:00 and the profile's noise zig-zagged, so the residuals stayed wide after the
    # noise narrowed (02-15 16:00) and hid the +1.5 at 03-08 12:00 (found then: nothing at all).
    # The narrowing is found 44 bars on; the shift, 4.5 of the new spreads, where it happened.
    def found(bars: pl.DataFrame) -> list[tuple[str, str]]:
        return [(s.onset.strftime("%m-%d %H:%M"), s.new_state.rsplit("; ", 1)[1])
                for s in CalibratedDrift("d", "host", ["load_mean"]).update(bars)]

    assert found(_hourly(seed=2)) == []
    assert found(_hourly(seed=2, narrow_at=1000, shift_at=1500)) == [
        ("02-17 12:00", "spread went narrower"), ("03-08 12:00", "level went up")]


def test_hourly_autocorrelated_noise_keeps_the_plain_level() -> None:
    # Judged over one day (24 hourly bars), a daily profile fitted to AR(0.8) noise beat the plain
    # level now and then: each of seeds 1 to 4 switched the model 4 times, and each switch restarts
    # the drift detector's calibration. Judged over at least 96 bars, the profile is not taken up.
    def switches(seed: int) -> int:
        bars = _ar1(1500, seed=seed, bar=timedelta(hours=1))
        base, seasonal, count = SeasonalBaseline(level_half_life=30, scale_half_life=100), False, 0
        for time, value in bars.iter_rows():
            base.learn(time, value, clip=4.0)
            count, seasonal = count + (base.seasonal != seasonal), base.seasonal
        return count

    assert [switches(seed) for seed in (1, 2, 3, 4)] == [0, 0, 0, 2]


def test_the_alarm_level_before_excursions_calibrate_it() -> None:
    # 300 bars of AR(0.8) noise: the lag-1 autocorrelation of the scores, averaged plainly at first,
    # reads 0.78 (0.46 averaged from zero at the slow rate). The level channels' excursions are
    # still too few to fit: their alarm level is the bound for independent scores,
    # E[z^2] ln(1 / 1e-5) / (2 * 0.6) = 15.35; the spread channels' is `threshold`.
    detector = CalibratedDrift("d", "host", ["load_mean"])
    detector.update(_ar1(300, seed=1))
    assert round(detector.state["lag_product"]["load_mean"] / 1.6, 2) == 0.78
    assert not detector.state["excursions"]["up"].ready
    assert [round(detector._alarm_level(c), 2) for c in ("up", "down", "wider", "narrower")] == [
        15.35, 15.35, 12.0, 12.0]


def test_an_exponential_tail_is_first_fitted_by_its_mean_excess() -> None:
    # Three draws of 30 exponential scores of mean 2 (true bound at 1e-5: 23.03). The three largest
    # read as quantiles (their two gaps set the scale) gave 6.9, 5.1 and 6.6; the mean excess over
    # the median gives 17.6, 15.7 and 29.9.
    rng = np.random.default_rng(5)
    bounds = []
    for _ in range(3):
        tail = TailModel(0.9, 2000, first=30, max_shape=0.0)
        for value in rng.exponential(2.0, 30):
            tail.learn(float(value))
        bounds.append(round(tail.bound(1e-5), 1))
    assert bounds == [17.6, 15.7, 29.9]


def _nightly_batch(days: int, seed: int) -> pl.DataFrame:
    """Jobs per minute: exact zeros but for a batch from 02:00 to 03:00 each day."""
    rng = np.random.default_rng(seed)
    minutes = days * 1440
    hours = (np.arange(minutes) % 1440) / 60
    jobs = np.where((hours >= 2) & (hours < 3), np.round(rng.gamma(4, 10, minutes), 2), 0.0)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(minutes)], "load_mean": jobs})


def test_a_run_of_one_reading_has_no_spread_change() -> None:
    # The daily profile spreads the batch into the hours of zeros beside it, so their residuals
    # follow the profile and narrowed now and then (found then, besides these: narrower spreads on
    # Tue 10:29, Thu 04:29, Fri 11:07, Sat 04:55, 05:37 and 06:20, Sun 03:46 and 04:17, in zeros
    # either side of the change point). A window of one reading holds no change of spread.
    assert _found_on(_nightly_batch(7, seed=6)) == [
        ("Mon 05 02:01", "level went up"), ("Mon 05 03:00", "level went down"),
        ("Thu 08 00:34", "level went down"), ("Thu 08 01:33", "level went down"),
        ("Fri 09 03:12", "spread went narrower"), ("Sat 10 00:33", "level went down"),
        ("Sun 11 02:44", "spread went narrower"),
    ]
