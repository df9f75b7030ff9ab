"""Calibrated detectors: thresholds from each stream's own score distribution.

Both detectors share one front end, `SeasonalBaseline`: per feature, a robust
level (with a damped trend), a daily profile (24 hourly knots, interpolated)
plus a day-of-week offset, used only once the data has shown that they
predict better than the plain level, and a running scale (mean absolute
residual). A bar's residual divided by the scale is its score.

- `CalibratedAnomaly` turns scores into tail probabilities with a
  peaks-over-threshold model (`TailModel`: an exponential tail above a running
  high quantile) and raises an anomaly when the probability (times the number
  of features) falls below `alarm_probability`. An extreme bar is confirmed a
  few bars later: if the values stay shifted it was a level shift (left to the
  drift detector; the baseline re-anchors) unless its first bar was beyond
  `extreme_probability` (then it is an anomaly at that bar all the same); if an
  extreme comes a day or a week after an earlier one, or at the same time of
  day or week as two earlier ones (extremes, those of the warm-up included, or
  bars beyond `clip` scales that were not extreme), it is seasonal and not
  reported.
- `CalibratedDrift` runs two-sided CUSUM tests on the calibrated residuals,
  for the level and for the spread. The alarm level is the larger of
  `threshold` and the `excursion_probability` quantile of the stream's own
  past CUSUM excursions (so autocorrelated series calibrate themselves; until
  there are enough of them, the level channels use that quantile for
  independent scores). The
  finding carries the change-point estimate as its onset; after an alarm the
  baseline re-anchors on the data since that point. A level shift must be a
  jump: the bars just after the change point must differ from those just
  before by `jump_significance` standard errors of the noise (its spread
  measured bar to bar, its lag-1 autocorrelation about a line either side,
  corrected for the bias of so few bars), so a smooth move (a daily cycle not
  yet profiled, a slow wander) is followed, not reported.

Warm-ups are stated in time (`warmup_s`, with a minimum of `warmup_bars`), and
a finding dated inside the warm-up is not reported; each detector has an alarm
budget (`refractory_bars`, `max_alarms_per_day`).

>>> from datetime import UTC, datetime, timedelta
>>> import random
>>> import polars as pl
>>> rng = random.Random(3)
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> values = [rng.gauss(10.0 if i < 600 else 14.0, 1.0) for i in range(900)]
>>> values[300] += 12.0
>>> bars = pl.DataFrame({"bar_time": [t0 + timedelta(minutes=i) for i in range(900)], "value_mean": values})
>>> [(s.type, s.onset.strftime("%H:%M")) for s in CalibratedAnomaly("spikes", "cpu", ["value_mean"]).update(bars)]
[('anomaly', '05:00')]
>>> [(s.type, s.onset.strftime("%H:%M")) for s in CalibratedDrift("shifts", "cpu", ["value_mean"]).update(bars)]
[('concept_drift', '10:00')]
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from qraft_core.detectors.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Limit,
    Signal,
    StreamDetector,
    confidence_of,
    register_detector,
)
from qraft_core.detectors.drift import change_point

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
HOURS = 24
# Bars a baseline reads before its scores mean anything (and before it clips what it learns).
SETTLE_BARS = 10
# The fewest bars over which the daily profile is judged against the plain level: a day of hourly
# bars is 24 squared errors, and autocorrelated noise makes a profile look better on so few.
COMPARISON_BARS = 4 * HOURS
# Hours either side of a level step compared with the same hours a day or a week earlier.
STEP_HOURS = 6
# E[z^2] of a score z in units of the mean absolute residual (pi / 2 for Gaussian noise).
Z_SQUARE = 1.6
# The smallest spread a baseline assumes, the mirror of the bars' largest value (1e150, see
# `aggregate.LARGEST_VALUE`): values of 1e-150 to 1e150 in size are scored alike, and spreads
# square to at least 1e-300, a normal float, so no ratio of a spread or a score underflows to zero.
SMALLEST_SPREAD = 1e-150
# How long, and how many, extreme and notable bars are remembered to tell a daily or weekly
# recurrence (at most one every ten minutes over the span: a stream more often beyond `clip`
# remembers a shorter span).
RECURRENCE_S = 2 * WEEK_S
RECURRENCE_MEMORY = int(RECURRENCE_S / 600)


def _rate(half_life: float) -> float:
    """EWMA weight of the newest value for a memory of `half_life` updates."""
    return 1.0 - 0.5 ** (1.0 / max(half_life, 1e-9))


@functools.lru_cache(maxsize=64)
def _profile_rates(step_s: float) -> tuple[float, float, float, float]:
    """EWMA weights of a baseline's profiles for bars `step_s` apart (every bar needs them, and the
    bar interval rarely changes): the slow level's (half a day), a daily knot's (a day of its own
    bars), the weekday offsets' (three weeks) and the model comparison's (a day, at least
    `COMPARISON_BARS`)."""
    per_hour = max(1.0, 3600.0 / step_s)
    compare = max(_rate(max(DAY_S / step_s, COMPARISON_BARS)), 1e-3)
    return _rate(12 * per_hour), _rate(per_hour), _rate(24 * per_hour), compare


class TailModel:
    """Generalized Pareto tail of a score, fitted to three running quantiles (peaks over threshold).

    The quantiles at `quantile` (q), (1+q)/2 and (3+q)/4 give the tail's shape
    (Pickands' estimator, kept in [0, 0.5]: exponential for light tails, a power
    law for heavy ones) and scale. Quantiles move by small steps, so a single
    outlier barely changes the model, while a stream whose ordinary values are
    heavy-tailed gets a heavy tail and does not alarm on them.

    >>> tail = TailModel(0.9, 500)
    >>> for i in range(200):
    ...     tail.learn(float(i % 10))
    >>> tail.p_value(0.0), tail.p_value(30.0) < 1e-4
    (1.0, True)
    """

    def __init__(self, quantile: float, memory: float, first: int = 50, max_shape: float = 0.5) -> None:
        self.shares = (1.0 - quantile, (1.0 - quantile) / 2, (1.0 - quantile) / 4)  # tail shares
        self.memory = memory
        self.first_size = first  # scores collected before the first fit
        self.max_shape = max_shape
        self.first: list[float] = []
        self.levels: list[float] = []  # the running quantiles
        self.count = 0

    @property
    def ready(self) -> bool:
        return bool(self.levels)

    def _fit(self, resolution: float = 0.0) -> tuple[float, float, float]:
        """(threshold, scale, shape) of the tail above the lowest quantile, for scores that come in
        steps of `resolution` (a quantized reading): quantiles inside one step measure nothing of
        the tail, so the quantiles are taken to be at least a step apart."""
        low, middle, high = self.levels
        first, second = max(middle - low, resolution, 1e-9), max(high - middle, resolution, 1e-9)
        shape = min(max(math.log(second / first) / math.log(2.0), 0.0), self.max_shape)
        scale = first / math.log(2.0) if shape < 1e-6 else first * shape / (2.0**shape - 1.0)
        return low, scale, shape

    def p_value(self, score: float, resolution: float = 0.0) -> float:
        if not self.levels or score <= self.levels[0]:  # not `ready`: this runs for every score
            return 1.0
        threshold, scale, shape = self._fit(resolution)
        y = (score - threshold) / scale
        survival = math.exp(-y) if shape < 1e-6 else (1.0 + shape * y) ** (-1.0 / shape)
        return self.shares[0] * survival

    def bound(self, probability: float) -> float:
        """The score whose tail probability is `probability` (inf before calibration)."""
        if not self.ready:
            return math.inf
        threshold, scale, shape = self._fit()
        ratio = self.shares[0] / probability
        y = math.log(ratio) if shape < 1e-6 else (ratio**shape - 1.0) / shape
        return threshold + scale * y

    def learn(self, score: float) -> None:
        if not self.levels:
            self.first.append(score)
            if len(self.first) >= self.first_size:
                ordered = sorted(self.first)
                if self.max_shape > 0:
                    self.levels = [ordered[min(int((1.0 - share) * len(ordered)), len(ordered) - 1)]
                                   for share in self.shares]
                else:
                    # An exponential tail: its scale is the mean excess over the median, measured
                    # on half the scores (the gaps between the three largest of a few dozen, read
                    # as quantiles, put the bound anywhere from half to twice its value).
                    median = ordered[len(ordered) // 2]
                    scale = statistics.fmean(v - median for v in ordered[len(ordered) // 2 + 1:] or [median])
                    self.levels = [median + scale * math.log(0.5 / share) for share in self.shares]
                self.first = []
            return
        # Stochastic approximation of each quantile, in steps proportional to the tail's width,
        # large at first (1/n) to settle fast, then fixed (forgetting beyond `memory` scores).
        # (Written out for the three quantiles: this runs for every score.)
        self.count += 1
        low, middle, high = self.levels
        low_share, middle_share, high_share = self.shares
        width = max(high - low, 1e-9)
        memory = min(self.memory, 50.0 + self.count)
        low += width / (memory * low_share) * ((1.0 if score > low else 0.0) - low_share)
        middle += width / (memory * middle_share) * ((1.0 if score > middle else 0.0) - middle_share)
        high += width / (memory * high_share) * ((1.0 if score > high else 0.0) - high_share)
        middle = max(middle, low)
        self.levels[:] = low, middle, max(high, middle)


class SeasonalBaseline:
    """Expected value and scale of one feature, with daily/weekly profiles where they help.

    >>> from datetime import UTC, datetime, timedelta
    >>> base = SeasonalBaseline(level_half_life=20, scale_half_life=50)
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> for i in range(24 * 12 * 7):  # a week of 5-minute bars, a daily cycle of +-10
    ...     t = t0 + timedelta(minutes=5 * i)
    ...     base.learn(t, 50 + 10 * math.sin(2 * math.pi * i / 288), clip=4.0)
    >>> base.seasonal, abs(base.residual(t0 + timedelta(days=7, hours=6), 60.0)[0]) < 2.0
    (True, True)
    """

    def __init__(self, level_half_life: float, scale_half_life: float) -> None:
        self.level_rate = _rate(level_half_life)
        self.scale_rate = _rate(scale_half_life)
        self.n = 0
        self.fresh = 0  # bars since the start or the last re-anchoring
        self.level = 0.0
        self.trend = 0.0
        self.plain = 0.0  # level without any profile: the model the profiles must beat
        self.slow = 0.0  # level over about half a day: what the daily profile is measured against
        self.scale = 0.0
        self.daily = [0.0] * HOURS
        self.weekly = [0.0] * 7
        self.error_plain = 0.0
        self.error_seasonal = 0.0
        self.first_s = math.nan
        self.last_s = math.nan
        self.step_s = math.inf  # the bar interval: the smallest gap seen
        self.quantum = math.inf  # the reading's resolution: the smallest change between values seen
        self.previous = math.nan
        self.seasonal = False

    # -- profile -----------------------------------------------------------
    def _knots(self, epoch_s: float) -> tuple[int, float, int]:
        # Knots mid-hour, unless bars come an hour or more apart: then a knot at each bar. Bars
        # halfway between two knots would each read two knots' mean, and 24 such means cannot show
        # what alternates from one hour to the next (a one-hour daily event leaks into the hours
        # beside it, and the knots' noise zig-zags).
        offset = 0.0 if self.step_s >= 3600.0 else 0.5
        position = ((epoch_s % DAY_S) / 3600.0 - offset) % HOURS
        low = int(position)
        return low, position - low, int((epoch_s // DAY_S + 3) % 7)  # 1970-01-01 was a Thursday

    def season(self, epoch_s: float) -> float:
        return self._season_at(*self._knots(epoch_s))

    def _season_at(self, low: int, weight: float, weekday: int) -> float:
        return (1 - weight) * self.daily[low] + weight * self.daily[(low + 1) % HOURS] + self.weekly[weekday]

    def expected(self, epoch_s: float) -> float:
        if self.seasonal:
            return self.level + self.trend + self.season(epoch_s)
        return self.plain

    @property
    def profiled(self) -> bool:
        """Whether the daily profile has seen every hour of the day at least once."""
        return self.step_s < DAY_S / 4 and self.last_s - self.first_s >= DAY_S

    def floor(self) -> float:
        # A quantized reading (counts, integers, one decimal) cannot show a spread below half its
        # step: a run of equal values (zeros at night) must not make one step look extreme.
        quantum = self.quantum  # the smallest of absolute differences: finite, or inf before any
        resolution = quantum / 2 if quantum < math.inf else 0.0
        # Relative to the level, not to 1: a reading in farads or seconds is ordinary, and its
        # spread is not float noise. (A constant stream scores 0 whatever its floor.)
        return max(1e-9 * max(abs(self.level), abs(self.plain)), resolution, SMALLEST_SPREAD)

    def resolution(self, scale: float) -> float:
        """The smallest residual that means anything, in units of `scale`: the reading's step, or the
        floor (a constant stream's residuals are float noise: at 0.1, one bar of 0.1 + 1.4e-17)."""
        return max(self.quantum if self.quantum < math.inf else 0.0, self.floor()) / scale

    def residual(self, time: datetime, value: float) -> tuple[float, float]:
        """(value - expected, scale) before learning the bar."""
        return value - self.expected(time.timestamp()), max(self.scale, self.floor())

    # -- learning ----------------------------------------------------------
    def learn(self, time: datetime, value: float, clip: float) -> None:
        epoch_s = time.timestamp()
        if self.n == 0:
            self.level = self.plain = self.slow = value
            self.first_s = epoch_s
        elif epoch_s > self.last_s:
            self.step_s = min(self.step_s, epoch_s - self.last_s)
        self.last_s = epoch_s
        if value != self.previous and not math.isnan(self.previous):
            self.quantum = min(self.quantum, abs(value - self.previous))
        self.previous = value
        self.n += 1
        self.fresh += 1
        # Early on (and after a change), plain averages; later, the configured memories.
        warm = 1.0 / self.fresh
        level_rate, scale_rate = max(self.level_rate, warm), max(self.scale_rate, warm)
        bound = clip * max(self.scale, self.floor()) if self.n > SETTLE_BARS else math.inf
        knots = self._knots(epoch_s)
        season = self._season_at(*knots)
        error_plain = max(-bound, min(bound, value - self.plain))
        error_seasonal = max(-bound, min(bound, value - (self.level + self.trend + season)))
        used = error_seasonal if self.seasonal else error_plain
        self.scale += scale_rate * (abs(used) - self.scale)
        self.plain += level_rate * error_plain
        previous, trend = self.level, self.trend
        self.level = level = previous + (trend + level_rate * error_seasonal)
        self.trend = 0.98 * trend + 0.1 * level_rate * (level - previous - trend)
        if self.step_s < DAY_S / 4:
            self._learn_profile(epoch_s, value, bound, knots, season, error_plain, error_seasonal)

    def _learn_profile(self, epoch_s: float, value: float, bound: float, knots: tuple[int, float, int],
                       season: float, error_plain: float, error_seasonal: float) -> None:
        # Profiles are deviations from a level slow enough not to follow the daily cycle itself.
        # `knots` and `season` are those of `epoch_s`: `learn` has not touched the profiles yet.
        slow_rate, daily_rate, weekly_rate, compare = _profile_rates(self.step_s)
        self.slow += max(slow_rate, 1.0 / self.n) * max(-bound, min(bound, value - season - self.slow))
        low, weight, weekday = knots
        daily_error = max(-bound, min(bound, value - self.slow - season))
        self.daily[low] += daily_rate * (1 - weight) * daily_error
        self.daily[(low + 1) % HOURS] += daily_rate * weight * daily_error
        if epoch_s - self.first_s >= WEEK_S:
            self.weekly[weekday] += weekly_rate * daily_error
        # Which model predicts better (squared errors: a missed daily step weighs), over about a day.
        # Products, not `**`: a finite value near 1e308 squares to inf instead of raising OverflowError.
        self.error_plain += compare * (error_plain * error_plain - self.error_plain)
        self.error_seasonal += compare * (error_seasonal * error_seasonal - self.error_seasonal)
        if epoch_s - self.first_s >= 2 * DAY_S:
            # Hysteresis: on when the profiles clearly help, off only when they stop helping at all.
            # Flapping between the models would reset the drift detector's calibration each time.
            self.seasonal = self.error_seasonal < (1.0 if self.seasonal else 0.8) * self.error_plain

    def shift(self, offset: float) -> None:
        """Re-anchor after a level shift: move the level by `offset`."""
        self.level += offset
        self.plain += offset

    def anchor(self, plain: float, level: float, trend: float, scale: float, bars: int) -> None:
        """Re-anchor after a change: the data now sits at `plain` (`level` less its profile) with
        this trend and scale, measured on `bars` bars; until the memories are longer, level and
        scale are the plain averages since the change."""
        self.plain, self.level = plain, level
        self.trend = trend
        self.scale = max(scale, self.floor())
        self.fresh = max(bars, 1)


BASELINE_DEFAULTS: dict[str, Any] = {
    # Warm-up: no finding before this much data time has passed and `warmup_bars` bars were read.
    "warmup_s": 600.0,
    "warmup_bars": 60,
    # Memories of the baseline, in bars: level (and trend), scale.
    "level_half_life_bars": 30,
    "scale_half_life_bars": 100,
    # Residuals beyond this many scales teach the baseline no more than this many scales.
    "clip": 4.0,
    # Alarm budget: no two findings closer than this many bars, at most this many per day of data.
    "refractory_bars": 10,
    "max_alarms_per_day": 48,
}


# The parameters of both calibrated detectors (see ANOMALY_PARAMS and DRIFT_PARAMS below).
CALIBRATED_LIMITS: dict[str, Limit] = {
    "warmup_s": NON_NEGATIVE, "warmup_bars": NON_NEGATIVE, "level_half_life_bars": POSITIVE,
    "scale_half_life_bars": POSITIVE, "clip": POSITIVE, "refractory_bars": NON_NEGATIVE,
    "max_alarms_per_day": AT_LEAST_ONE, "alarm_probability": PROBABILITY, "tail_quantile": PROBABILITY,
    "calibration_bars": AT_LEAST_ONE, "confirm_bars": AT_LEAST_ONE, "extreme_probability": PROBABILITY,
    "recurrence_s": NON_NEGATIVE, "recurrence_bars": NON_NEGATIVE, "confidence_scale": POSITIVE,
    "level_allowance": NON_NEGATIVE, "spread_allowance": NON_NEGATIVE, "threshold": POSITIVE,
    "score_clip": POSITIVE, "excursion_probability": PROBABILITY, "jump_bars": AT_LEAST_ONE,
    "jump_significance": NON_NEGATIVE, "segment_bars": Limit(4),
}


class CalibratedDetector(StreamDetector):
    """Baselines per feature, the warm-up and the alarm budget; subclasses score bars."""

    engine: ClassVar[str] = "qraft"
    limits: ClassVar[dict[str, Limit]] = CALIBRATED_LIMITS

    @property
    def algorithm(self) -> str:
        return "qraft." + type(self).__name__

    @property
    def version(self) -> str:
        return "1"

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "baselines": {
                f: SeasonalBaseline(float(self.param("level_half_life_bars")), float(self.param("scale_half_life_bars")))
                for f in self.features
            },
            "bars": 0,
            "first_s": math.nan,
            "warm_s": None,  # epoch seconds of the first bar after the warm-up
            "last_alarm_bar": -(10**9),
            "alarms": [],  # epoch seconds of the findings of the last day
        }

    def _tails(self, keys: Sequence[str], first: int = 50, max_shape: float = 0.5) -> dict[str, TailModel]:
        memory = float(self.param("calibration_bars"))
        return {key: TailModel(float(self.param("tail_quantile")), memory, first, max_shape) for key in keys}

    def _update_row(self, time: datetime, values: dict[str, float]) -> Signal | None:
        present = {f: v for f, v in values.items() if not math.isnan(v)}
        if not present:
            return None  # a bar without values (a gap) changes nothing
        self.state["bars"] += 1
        found = self._read(time, present, self._warm(time))
        # A change dated inside the warm-up is the baseline settling (a level still converging,
        # a daily cycle it has not followed yet), not a change from a reference it had: the
        # detector re-anchors on it all the same, but does not report it.
        warm_s = self.state.get("warm_s")  # (absent from a state saved before it was kept)
        if found is not None and warm_s is not None and found.finding_time.timestamp() < warm_s:
            return None
        return found

    def _read(self, time: datetime, present: dict[str, float], warm: bool) -> Signal | None:
        """Score one bar's present values (after the warm-up when `warm`), then learn them."""
        raise NotImplementedError

    def _warm(self, time: datetime) -> bool:
        state = self.state
        if math.isnan(state["first_s"]):
            state["first_s"] = time.timestamp()
        warm = (
            state["bars"] > int(self.param("warmup_bars"))
            and time.timestamp() - state["first_s"] >= float(self.param("warmup_s"))
        )
        if warm and state.get("warm_s", 0.0) is None:  # (a state saved before this key never sets it)
            state["warm_s"] = time.timestamp()
        return warm

    def _within_budget(self, time: datetime) -> bool:
        """Whether one more finding fits the budget; if so it is counted."""
        state = self.state
        now = time.timestamp()
        state["alarms"] = [t for t in state["alarms"] if now - t < DAY_S]
        if state["bars"] - state["last_alarm_bar"] < int(self.param("refractory_bars")):
            return False
        if len(state["alarms"]) >= int(self.param("max_alarms_per_day")):
            return False
        state["alarms"].append(now)
        state["last_alarm_bar"] = state["bars"]
        return True


ANOMALY_PARAMS: dict[str, Any] = {
    **BASELINE_DEFAULTS,
    # Tail probability (times the number of features) below which a bar is extreme.
    "alarm_probability": 1e-5,
    # The tail model: exponential above this running quantile of scores, memory in bars.
    "tail_quantile": 0.9,
    "calibration_bars": 2000,
    # Bars read after an extreme one to tell a spike (values come back) from a level shift.
    "confirm_bars": 3,
    # A bar this unlikely is an anomaly even when the values stay away after it: an excursion
    # that extreme is reported at its first bar, not only as the level shift it may turn out to be.
    "extreme_probability": 1e-8,
    # An extreme this close (in seconds, or `recurrence_bars` bars if longer) to the same time of
    # an earlier day or week is a seasonal recurrence, not an anomaly.
    "recurrence_s": 900.0,
    "recurrence_bars": 2,
    "confidence_scale": 3.0,
}


@register_detector("CalibratedAnomaly")
class CalibratedAnomaly(CalibratedDetector):
    """Spikes and dips whose tail probability under the stream's own recent scores is tiny."""

    kind: ClassVar[str] = "anomaly"
    defaults: ClassVar[dict[str, Any]] = ANOMALY_PARAMS

    def _fresh_state(self) -> dict[str, Any]:
        state = super()._fresh_state()
        state["tails"] = self._tails(self.features)
        state["pending"] = None  # an extreme bar waiting for confirmation
        state["extremes"] = []  # epoch seconds of recent confirmed extremes (seasonal check)
        state["notable"] = []  # epoch seconds of recent bars beyond `clip` scales, not extreme
        state["runs"] = {f: [0, 0.0] for f in self.features}  # signed length and residual sum of a run
        return state

    def _read(self, time: datetime, present: dict[str, float], warm: bool) -> Signal | None:
        state = self.state
        residuals = {f: state["baselines"][f].residual(time, v) for f, v in present.items()}
        scores = {f: abs(r) / scale for f, (r, scale) in residuals.items()}
        pending = state["pending"]
        if pending is not None:
            found = self._confirm(pending, time, residuals)
            if state["pending"] is None:
                # Concluded: a level shift has re-anchored the baseline, so this bar is read anew.
                residuals = {f: state["baselines"][f].residual(time, v) for f, v in present.items()}
                self._learn(time, present, residuals, skip_baseline=False)
                return found
        alarm_probability = float(self.param("alarm_probability"))
        # Bonferroni: the chance that any of the features is this extreme.
        p_values = {f: min(1.0, state["tails"][f].p_value(s, state["baselines"][f].resolution(residuals[f][1]))
                           * len(self.features)) for f, s in scores.items()}
        p_value = min(p_values.values())
        extreme = warm and pending is None and p_value < alarm_probability
        if not extreme and any(state["baselines"][f].n > SETTLE_BARS and s > float(self.param("clip"))
                               for f, s in scores.items()):
            # Too early to alarm (the tail may not even be fitted), not too early to remember: a
            # seasonal event seen in the warm-up is a recurrence when it comes again a day later.
            # After the warm-up, a bar beyond `clip` scales that is not extreme (a daily spike the
            # profile has partly learnt) is remembered as notable: two of them at the same time
            # of earlier days make an extreme there a recurrence too.
            self._remember("notable" if warm else "extremes", time.timestamp())
        if extreme:
            outliers = [f for f, p in p_values.items() if p < alarm_probability]
            state["pending"] = {
                "time": time, "values": present, "residuals": {f: residuals[f][0] for f in outliers},
                "scores": scores, "p_value": p_value,
                "expected": {f: state["baselines"][f].expected(time.timestamp()) for f in present},
                "seen": 0, "shifted": 0, "shift_sum": dict.fromkeys(outliers, 0.0),
            }
            if int(self.param("confirm_bars")) == 0:
                return self._conclude(state["pending"], time)
        # An extreme bar does not teach the baseline until it is known to be a lasting change.
        self._learn(time, present, residuals, skip_baseline=extreme)
        return None

    def _learn(self, time: datetime, present: dict[str, float], residuals: dict[str, tuple[float, float]],
               skip_baseline: bool) -> None:
        confirm = max(int(self.param("confirm_bars")), 1)
        clip = float(self.param("clip"))
        for f, value in present.items():
            baseline, tail, run = self.state["baselines"][f], self.state["tails"][f], self.state["runs"][f]
            residual, scale = residuals[f]
            # A run of high residuals on one side is a level moving, not the noise's tail: it
            # teaches the tail nothing, and once it outlasts the confirmation the level re-anchors.
            high = tail.ready and abs(residual) / scale > tail.levels[0]
            same_side = high and run[0] * residual > 0
            run[0], run[1] = (run[0] + (1 if residual > 0 else -1), run[1] + residual) if same_side else (
                (1 if residual > 0 else -1, residual) if high else (0, 0.0))
            if baseline.n > SETTLE_BARS and abs(run[0]) < 2:  # first scores measure a baseline still forming
                tail.learn(abs(residual) / scale)
            if not skip_baseline:
                baseline.learn(time, value, clip)
            if abs(run[0]) > confirm:
                baseline.shift(run[1] / abs(run[0]))
                baseline.fresh = abs(run[0])
                run[0], run[1] = 0, 0.0

    def _confirm(self, pending: dict[str, Any], time: datetime,
                 residuals: dict[str, tuple[float, float]]) -> Signal | None:
        pending["seen"] += 1
        shifted = False
        for f, (r, _) in residuals.items():
            if f not in pending["residuals"]:
                continue
            # Measured against the baseline from before the extreme bar (it did not learn it).
            first = pending["residuals"][f]
            pending["shift_sum"][f] += r
            if first * r > 0 and abs(r) >= 0.5 * abs(first):
                shifted = True
        pending["shifted"] += int(shifted)
        if pending["seen"] < int(self.param("confirm_bars")):
            return None
        return self._conclude(pending, time)

    def _conclude(self, pending: dict[str, Any], time: datetime) -> Signal | None:
        state = self.state
        state["pending"] = None
        seen = max(pending["seen"], 1)
        if pending["shifted"] * 2 > seen:
            # The values stayed away: a level shift, not a spike. Re-anchor on the bars after it.
            for f, total in pending["shift_sum"].items():
                state["baselines"][f].shift(total / seen)
                state["baselines"][f].fresh = seen
                state["runs"][f] = [0, 0.0]  # the run of this shift is accounted for
            if pending["p_value"] >= float(self.param("extreme_probability")):
                return None
        onset: datetime = pending["time"]
        if self._recurring(onset.timestamp(), state["baselines"]) or not self._within_budget(onset):
            return None
        scores = pending["scores"]
        top = max(pending["residuals"], key=lambda f: scores[f])
        surprise = -math.log10(max(pending["p_value"], 1e-300))
        threshold = -math.log10(float(self.param("alarm_probability")))
        sign = "+" if pending["residuals"][top] > 0 else "-"
        return self.signal(
            time,
            surprise,
            confidence_of(surprise - threshold + 1.0, float(self.param("confidence_scale"))),
            scores,
            "expected: " + ", ".join(f"{f} ≈ {v:.4g}" for f, v in pending["expected"].items()),
            f"observed: {top} = {pending['values'][top]:.4g} "
            f"({sign}{_scales(scores[top])} scales, tail probability {pending['p_value']:.2g})",
            onset=onset,
            lag_bars=pending["seen"],
        )

    def _remember(self, kind: str, epoch_s: float) -> None:
        """Record an extreme or notable bar for `_recurring`: those of the last `RECURRENCE_S`, at
        most `RECURRENCE_MEMORY` of them. (A count alone, 32, was ten hours of an hourly event:
        a daily recurrence could never be seen.)"""
        times = self.state.setdefault(kind, [])  # ("notable" is absent from older states)
        times.append(epoch_s)
        while epoch_s - times[0] > RECURRENCE_S or len(times) > RECURRENCE_MEMORY:
            del times[0]

    def _recurring(self, epoch_s: float, baselines: dict[str, SeasonalBaseline]) -> bool:
        """Whether an extreme or notable bar came at this time a day or a week before, or two
        came at this time of earlier days or weeks (records this extreme). A daily event shows
        every day: one alone several days back, with nothing at that time since, is an unrelated
        incident (or a noisy stream's notable bar); two are a pattern."""
        state = self.state
        step = min(b.step_s for b in baselines.values())
        tolerance = max(float(self.param("recurrence_s")), int(self.param("recurrence_bars")) * step)
        earlier = [epoch_s - t for kind in ("extremes", "notable") for t in state.get(kind, [])
                   if DAY_S / 2 <= epoch_s - t <= RECURRENCE_S]
        same_time = [gap for gap in earlier if any(
            min(gap % period, period - gap % period) <= tolerance for period in (DAY_S, WEEK_S))]
        self._remember("extremes", epoch_s)
        return len(same_time) > 1 or any(min(abs(gap - DAY_S), abs(gap - WEEK_S)) <= tolerance for gap in same_time)


DRIFT_PARAMS: dict[str, Any] = {
    **BASELINE_DEFAULTS,
    # A CUSUM compares with a reference level and scale: they need more bars than a tail does.
    "warmup_bars": 120,
    "level_half_life_bars": 60,
    "scale_half_life_bars": 200,
    "refractory_bars": 30,
    "max_alarms_per_day": 24,
    # CUSUM allowances (in scales) for the level and for the spread, and the smallest alarm level.
    "level_allowance": 0.6,
    "spread_allowance": 0.4,
    "threshold": 12.0,
    # Residuals are clipped to this many scales before the CUSUM (one spike is not a drift).
    "score_clip": 6.0,
    # The alarm level is at least this quantile of the stream's own past CUSUM excursions.
    "excursion_probability": 1e-5,
    "tail_quantile": 0.9,
    "calibration_bars": 2000,
    # A level shift is a jump: the means of up to `jump_bars` bars either side of the change
    # point must differ by `jump_significance` standard errors of the bar-to-bar noise.
    "jump_bars": 8,
    "jump_significance": 3.0,
    # Recent bars kept to locate the change point and measure the new level and spread.
    "segment_bars": 48,
    # A change this close (in seconds, or `recurrence_bars` bars if longer) to the time of day of
    # one a day or a week earlier, not in the opposite direction, is the daily or weekly cycle.
    "recurrence_s": 900.0,
    "recurrence_bars": 2,
    "confidence_scale": 2.0,
}
CHANNELS = ("up", "down", "wider", "narrower")
LEVEL_CHANNELS = ("up", "down")
OPPOSITE = {"up": "down", "down": "up", "wider": "narrower", "narrower": "wider"}
# One CUSUM channel: its statistic, its peak, and bars since it last left zero.
EMPTY_EXCURSION: dict[str, Any] = {"sum": 0.0, "peak": 0.0, "bars": 0}


@register_detector("CalibratedDrift")
class CalibratedDrift(CalibratedDetector):
    """Level shifts, ramps and spread changes: CUSUM on calibrated residuals, dated at the change point."""

    kind: ClassVar[str] = "concept_drift"
    defaults: ClassVar[dict[str, Any]] = DRIFT_PARAMS

    def _fresh_state(self) -> dict[str, Any]:
        state = super()._fresh_state()
        state["cusum"] = {f: {c: dict(EMPTY_EXCURSION) for c in CHANNELS} for f in self.features}
        state["excursions"] = self._tails(CHANNELS, first=30, max_shape=0.0)
        # Per feature: (epoch seconds, value, its profile part) of the last `segment_bars` bars.
        state["recent"] = {f: [] for f in self.features}
        state["previous_z"] = {}
        state["lag_product"] = dict.fromkeys(self.features, 0.0)  # running mean of z(t) * z(t-1)
        state["innovation_scale"] = dict.fromkeys(self.features, 1.0)  # running mean of |z(t) - rho z(t-1)|
        # Features read as counts so far (every value a non-negative integer): see `_stabilised`.
        state["counts"] = dict.fromkeys(self.features, True)
        # Per feature: [hour since the epoch, sum, bars] of the last week and a day of hours.
        state["hours"] = {f: [] for f in self.features}
        return state

    def _stabilised(self, f: str, value: float) -> float:
        """The value on the scale the baseline models: Anscombe's square root for counts.

        A count's spread grows with its level (Poisson: variance = mean), so on the raw scale a
        busy hour looks like a wider spread and a quiet night, all zeros, like a narrower one.
        2 * sqrt(x + 3/8) gives counts a spread of about 1 at any level. The first value that is
        not a non-negative integer ends this for the feature: its baseline is rebuilt on the raw
        scale from the recent bars.
        """
        state = self.state
        if state["counts"][f] and (value < 0 or value != math.floor(value)):
            state["counts"][f] = False
            # Rounded: they were counts, and the inverse is inexact (a zero comes back as -5.4e-17,
            # which against the zeros that follow would read as a level shift).
            recent = [(t, float(round(_unstabilise(v))), season) for t, v, season in state["recent"][f]]
            state["recent"][f] = recent
            baseline = state["baselines"][f] = SeasonalBaseline(
                float(self.param("level_half_life_bars")), float(self.param("scale_half_life_bars")))
            for t, v, _ in recent:
                baseline.learn(datetime.fromtimestamp(t, tz=UTC), v, float(self.param("clip")))
            state["cusum"][f] = {c: dict(EMPTY_EXCURSION) for c in CHANNELS}
            state["hours"][f] = []  # means of square roots: not comparable with the raw values
        return 2.0 * math.sqrt(value + 0.375) if state["counts"][f] else value

    def _shown(self, f: str, value: float) -> float:
        """A modelled value back on the feature's own scale, for descriptions."""
        return _unstabilise(value) if self.state["counts"][f] else value

    def _read(self, time: datetime, present: dict[str, float], warm: bool) -> Signal | None:
        state = self.state
        score_clip = float(self.param("score_clip"))
        level_allowance, spread_allowance = float(self.param("level_allowance")), float(self.param("spread_allowance"))
        # The alarm level is never below `threshold`: only a statistic above it needs the calibrated bound.
        threshold = float(self.param("threshold"))
        lag_rate = _rate(float(self.param("scale_half_life_bars")))
        segment_bars, clip = int(self.param("segment_bars")), float(self.param("clip"))
        epoch_s = time.timestamp()
        alarms: list[tuple[float, str, str]] = []
        for f, raw in present.items():
            value = self._stabilised(f, raw)
            baseline = state["baselines"][f]
            residual, scale = baseline.residual(time, value)
            z = max(-score_clip, min(score_clip, residual / scale))
            # Autocorrelated residuals sum up faster than independent ones: scaled by the square
            # root of the AR(1) long-run variance factor (1 + rho) / (1 - rho), a CUSUM keeps its
            # false alarm rate. The level channels take half of that correction (in logarithm):
            # their excursions calibrate the rest, and a real shift is itself autocorrelated.
            previous = state["previous_z"].get(f, 0.0)
            state["previous_z"][f] = z
            # Plain averages at first, as for the innovations' scale below: from zero at the slow
            # rate alone, rho would read low for hundreds of bars, and early autocorrelated scores
            # would step the level statistics up undamped.
            state["lag_product"][f] += max(lag_rate, 1.0 / state["bars"]) * (
                z * previous - state["lag_product"][f])
            rho = min(max(state["lag_product"][f] / Z_SQUARE, 0.0), 0.9)  # (z in mean-absolute units)
            damping = math.sqrt((1 - rho) / (1 + rho))
            level_damping = math.sqrt(damping)
            # A narrower spread is tested on the innovations (the residual less the part the
            # previous one predicts), in units of their own running mean absolute value: they are
            # nearly independent and narrow as the noise does. Damped, the residuals could not
            # show it: a step of at most `damping` less the allowance never rises once rho passes
            # 0.7; nor could residuals that a slow part (a daily cycle not yet profiled, a wander)
            # keeps wide.
            innovation = abs(z - rho * previous)
            scales = state.setdefault("innovation_scale", dict.fromkeys(self.features, 1.0))  # (absent from older states)
            # (Kept above zero: the narrower step divides by it, and learning, capped at `clip`
            # times the scale, could never raise it from zero.)
            innovation_scale = max(scales[f], SMALLEST_SPREAD)
            scales[f] = innovation_scale + max(lag_rate, 1.0 / state["bars"]) * (
                min(innovation, clip * innovation_scale) - innovation_scale)
            steps = {
                "up": z * level_damping - level_allowance,
                "down": -z * level_damping - level_allowance,
                "wider": (abs(z) - 1.0) * damping - spread_allowance,
                "narrower": 1.0 - innovation / innovation_scale - spread_allowance,
            }
            if scale <= baseline.floor() or (state["counts"][f] and _unstabilise(value - residual) < 1.0):
                # The spread is already at the reading's resolution: it cannot narrow any further
                # (a stream stuck on one value must not report a narrower spread forever). Nor can
                # counts expected below one: the square root does not stabilise their spread there,
                # it shrinks with the level (at 0.1 a count is almost always zero).
                steps["narrower"] = -spread_allowance
            for channel, step in steps.items():
                cusum = state["cusum"][f][channel]
                self._advance(cusum, channel, step)
                if warm and cusum["sum"] > threshold:
                    alarm_level = self._alarm_level(channel)
                    if cusum["sum"] > alarm_level:
                        alarms.append((cusum["sum"] / alarm_level, f, channel))
            recent = state["recent"][f]
            recent.append((int(epoch_s), value, baseline.season(epoch_s)))
            del recent[:-segment_bars]
            self._remember_hour(f, epoch_s, value)
            seasonal = baseline.seasonal
            baseline.learn(time, value, clip)
            if baseline.seasonal != seasonal:
                # Residuals of another model: their excursions calibrate afresh.
                state["excursions"] = self._tails(CHANNELS, first=30, max_shape=0.0)
        if not alarms:
            return None
        _, feature, alarmed = max(alarms)
        channel = alarmed
        if channel not in LEVEL_CHANNELS:
            # A level shift widens the residuals too: it is the level that moved when its own
            # statistic is well on the way to an alarm.
            level = max(LEVEL_CHANNELS, key=lambda c: state["cusum"][feature][c]["sum"])
            if state["cusum"][feature][level]["sum"] >= 0.5 * self._alarm_level(level):
                channel = level
        return self._alarm(time, feature, channel, alarmed)

    def _advance(self, cusum: dict[str, Any], channel: str, step: float) -> None:
        if cusum["sum"] + step <= 0:
            if cusum["sum"] > 0:
                # An excursion ended without an alarm: its peak calibrates the alarm level.
                self.state["excursions"][channel].learn(cusum["peak"])
            cusum.update(EMPTY_EXCURSION)
            return
        cusum["sum"] += step
        cusum["peak"] = max(cusum["peak"], cusum["sum"])
        cusum["bars"] += 1

    def _jumped(self, values: list[float], split: int) -> bool:
        """Whether the means of up to `jump_bars` bars either side of `split` differ by
        `jump_significance` standard errors of the noise.

        The noise is measured on differences of consecutive bars (less the largest: the jump
        itself), which a slow cycle or trend barely moves, so a stream that follows a daily cycle
        is held to its own short-term noise, not to the spread of its cycle. Autocorrelated noise
        differs less from bar to bar than its spread, and the means of a few of its bars vary
        more than those of independent bars: the difference is estimated and its standard error
        taken as for AR(1) noise (`_step_estimate`), with the lag-1 autocorrelation of the values
        about a line on each side of the split (the jump, a ramp or a cycle's slope do not count
        as autocorrelation), corrected for the bias of so few bars.
        """
        if split < 1 or len(values) - split < 1:
            return True
        bars = min(split, len(values) - split, int(self.param("jump_bars")))
        differences = sorted(abs(b - a) for a, b in itertools.pairwise(values))[:-1]
        if not differences:
            return True
        rho = _lag_one([_detrended(values[:split]), _detrended(values[split:])])
        weights, standard_error = _step_estimate(2 * bars, bars, rho)
        run = values[split - bars:split + bars]
        move = sum(w * v for w, v in zip(weights, run, strict=True))
        # Less the part of the move that the slope within the sides explains (a steep stretch of a
        # cycle not yet profiled moves the values too); a slope against the move, or beyond it, is
        # no evidence of a jump (it is noisy).
        explained = (math.copysign(1.0, move) * _pooled_slope([values[:split], values[split:]])
                     * sum(w * i for i, w in enumerate(weights)))
        jump = abs(move) - min(max(explained, 0.0), abs(move))
        # The mean absolute difference of two independent values is 2 / sqrt(pi) of its spread;
        # consecutive AR(1) values differ by sqrt(2 (1 - rho)) spreads.
        spread = statistics.fmean(differences) * math.sqrt(math.pi) / 2 / math.sqrt(1.0 - rho)
        return jump >= float(self.param("jump_significance")) * spread * standard_error

    def _alarm_level(self, channel: str) -> float:
        """The larger of `threshold` and the bound calibrated on the stream's own excursions; for
        a level channel whose excursions are still too few to fit, the bound for independent
        scores instead.

        A CUSUM whose steps have mean -k and variance s^2 peaks above h in an excursion with
        probability about exp(-2 k h / s^2) (Brownian approximation): the bound at
        `excursion_probability` p is s^2 ln(1/p) / (2 k), with s^2 = E[z^2] for the level
        channels (15.3 scales at the defaults). `threshold` alone let the first few hundred bars of
        autocorrelated streams and of daily cycles not yet profiled alarm at 12 to 14. (The
        spread channels' steps, |z| about its mean, vary less: their bound is below `threshold`.)
        """
        tail = self.state["excursions"][channel]
        probability = float(self.param("excursion_probability"))
        if tail.ready:
            return max(float(self.param("threshold")), tail.bound(probability))
        allowance = float(self.param("level_allowance"))
        if channel not in LEVEL_CHANNELS or allowance <= 0:  # (without an allowance, no such bound)
            return float(self.param("threshold"))
        return max(float(self.param("threshold")), Z_SQUARE * math.log(1.0 / probability) / (2.0 * allowance))

    def _alarm(self, time: datetime, feature: str, channel: str, alarmed: str) -> Signal | None:
        """The finding of an alarm on `channel` (`alarmed`: the channel whose statistic crossed)."""
        state = self.state
        alarmed_excursion = state["cusum"][feature][channel]
        baseline = state["baselines"][feature]
        before_scale = max(baseline.scale, baseline.floor())
        # The change point: the split of the recent bars (twice the excursion, at most
        # `segment_bars`) that best separates their means, or their spreads.
        window = state["recent"][feature][-(2 * alarmed_excursion["bars"] + 10):]
        values = [v - (season if baseline.seasonal else 0.0) for _, v, season in window]
        centre = statistics.fmean(values)
        level_change = channel in LEVEL_CHANNELS
        split = change_point(values if level_change else [abs(v - centre) for v in values], margin=2)
        # The alarm's own excursion calibrates too: a stream that keeps alarming raises its level.
        state["excursions"][channel].learn(alarmed_excursion["peak"])
        for excursion in state["cusum"][feature].values():
            excursion.update(EMPTY_EXCURSION)
        smooth = level_change and not self._jumped(values, split)
        if smooth and alarmed not in LEVEL_CHANNELS:
            # The level moved without a jump while the spread changed: it is the spread.
            channel, level_change, smooth = alarmed, False, False
            split = change_point([abs(v - centre) for v in values], margin=2)
        onset = datetime.fromtimestamp(window[split][0], tz=time.tzinfo)
        before, after = values[:split], values[split:]
        level_after = statistics.fmean(after)
        trend = 0.0
        if len(after) >= 10:
            # A ramp (the values still moving along a line) also moves the trend.
            slope = _slope(after)
            if abs(slope) * len(after) > 0.5 * abs(level_after - statistics.fmean(before)):
                trend, level_after = slope, level_after + slope * (len(after) - 1) / 2
        # A few bars measure a spread poorly: blend it with the old one until more arrive.
        weight = len(after) / (len(after) + 5)
        spread_after = statistics.fmean(abs(v - statistics.fmean(after)) for v in after)
        # Both models move: the one in use by what was measured, the other by the same step.
        profile = statistics.fmean(season for _, _, season in window[split:])
        plain, level = (level_after + profile, level_after) if baseline.seasonal else (level_after, level_after - profile)
        baseline.anchor(plain, level, trend, weight * spread_after + (1 - weight) * before_scale, len(after))
        # The card's figures are alike either side of the change point, so that they move the way
        # its words say: means of the bars before and since it, and their mean absolute deviations.
        # On a seasonal stream the values are less their profile, and both means are put back at
        # the times of day since the change (the one since is then the readings' own mean).
        shown_at = profile if baseline.seasonal else 0.0
        mean_before, mean_after = statistics.fmean(before), statistics.fmean(after)
        spread_before = statistics.fmean(abs(v - mean_before) for v in before)
        spread_unit = " on the square-root scale of counts" if state["counts"][feature] else ""
        if level_change:
            strength = abs(mean_after - mean_before) / before_scale
            went = channel if mean_after == mean_before else "up" if mean_after > mean_before else "down"
            described = (f"{feature} ≈ {self._shown(feature, mean_after + shown_at):.4g} (mean since the change); "
                         f"level went {went}")
        else:
            strength = abs(math.log(max(spread_after, baseline.floor()) / max(spread_before, baseline.floor())))
            went = channel if spread_after == spread_before else "wider" if spread_after > spread_before else "narrower"
            described = (f"{feature} spread ≈ {spread_after:.4g} (mean absolute deviation since the change"
                         f"{spread_unit}); spread went {went}")
        if smooth:
            # The values moved there smoothly (a daily cycle not yet profiled, a slow wander): the
            # baseline follows them, but a level shift is a jump.
            return None
        if not level_change and len({v for _, v, _ in window}) == 1:
            # One reading throughout, either side of the change point (a run of zeros, a sensor
            # still stuck): the values did not change; the spread the residuals show is the
            # daily profile's, moving under them.
            return None
        if self._recurring(feature, onset.timestamp(), channel, baseline.step_s):
            # The baseline follows a step of the daily or weekly cycle (re-anchored above).
            return None
        if level_change and self._stepped_before(feature, onset.timestamp(), time.timestamp()):
            return None
        if level_change and not baseline.seasonal and baseline.profiled:
            # The daily profile is learnt but not yet trusted: a move it predicts is the daily
            # cycle, not a drift (a real shift of the smallest size the CUSUM is set for remains).
            unexplained = [v - season for _, v, season in window]
            moved = abs(statistics.fmean(unexplained[split:]) - statistics.fmean(unexplained[:split]))
            if moved < 2 * float(self.param("level_allowance")) * before_scale:
                return None
        if not self._within_budget(onset):
            return None
        return self.signal(
            time,
            strength,
            confidence_of(strength, float(self.param("confidence_scale"))),
            {feature: 1.0},
            f"{feature} ≈ {self._shown(feature, mean_before + shown_at):.4g}, spread ≈ {spread_before:.4g}{spread_unit}"
            f" (before the change{', at the same times of day' if baseline.seasonal else ''})",
            described,
            onset=onset,
            lag_bars=len(after) - 1,  # (`after` holds the change point itself)
        )

    def _recurring(self, feature: str, onset_s: float, direction: str, step_s: float) -> bool:
        """Whether a change (at `onset_s`, in `direction`: a channel) repeats one of a day or a week
        before, which the profiles have not learnt yet (the first days, a weekend the first times).
        A step of the cycle shows as a level or a spread change depending on where it falls, so
        any earlier change counts but one in the opposite direction. Every change is remembered for
        a week and a day."""
        changes = self.state.setdefault("changes", {}).setdefault(feature, [])
        tolerance = max(float(self.param("recurrence_s")), int(self.param("recurrence_bars")) * step_s)
        recurring = any(
            earlier != OPPOSITE[direction] and min(abs(onset_s - at - DAY_S), abs(onset_s - at - WEEK_S)) <= tolerance
            for at, earlier in changes)
        changes[:] = [(at, earlier) for at, earlier in changes if onset_s - at <= WEEK_S + DAY_S]
        changes.append((onset_s, direction))
        return recurring


    def _remember_hour(self, feature: str, epoch_s: float, value: float) -> None:
        hours = self.state.setdefault("hours", {}).setdefault(feature, [])  # (absent from older states)
        hour = int(epoch_s // 3600)
        if hours and hours[-1][0] == hour:
            hours[-1][1] += value
            hours[-1][2] += 1
        elif not hours or hours[-1][0] < hour:
            hours.append([hour, value, 1])
            while hour - hours[0][0] > HOURS * 8 + STEP_HOURS:
                del hours[0]

    def _stepped_before(self, feature: str, onset_s: float, now_s: float) -> bool:
        """Whether the level stepped as much, and clearly, at the same time of day a day or a week
        earlier (hourly means over up to `STEP_HOURS` either side of the change).

        Unlike `_recurring`, this needs no earlier finding: the first time a weekend came, its
        step may have been too small or too early to alarm, and a cycle's step is seldom alike
        enough to alarm twice. The test is on the hourly means less those of the earlier day: the
        cycle is common to both and cancels, so what steps in the differences is new. It is the
        cycle when the earlier step stands out from the differences' noise (which the cycle does
        not swell), in the same direction, and the differences do not step: by less than their
        noise allows and than half of the step now."""
        means = {hour: total / bars for hour, total, bars in self.state.get("hours", {}).get(feature, [])}
        start = round(onset_s / 3600)
        after = max(1, min(STEP_HOURS, math.ceil(now_s / 3600) - start))
        sides = (range(start - STEP_HOURS, start), range(start, start + after))
        for period in (HOURS, HOURS * 7):
            kept = [[h for h in side if h in means and h - period in means] for side in sides]
            if len(kept[0]) + len(kept[1]) < 4 or not kept[0] or not kept[1]:
                continue
            now = [statistics.fmean(means[h] for h in side) for side in kept]
            earlier = [statistics.fmean(means[h - period] for h in side) for side in kept]
            step_now, step_earlier = now[1] - now[0], earlier[1] - earlier[0]
            new = step_now - step_earlier
            differences = [[means[h] - means[h - period] for h in side] for side in kept]
            squares = sum((d - statistics.fmean(side)) ** 2 for side in differences for d in side)
            spread = math.sqrt(squares / (len(kept[0]) + len(kept[1]) - 2))
            standard_error = spread * math.sqrt(1 / len(kept[0]) + 1 / len(kept[1]))
            # (One day's hourly means vary by the differences' spread over the square root of 2.)
            if (step_earlier * step_now > 0 and abs(step_earlier) >= 3.0 * standard_error / math.sqrt(2)
                    and abs(new) <= min(2.0 * standard_error, 0.5 * abs(step_now))):
                return True
        return False


def _scales(score: float) -> str:
    """A score in scales for a card: one decimal, or three significant digits once it is large
    (after a run of one value the scale is the smallest spread, and a score reaches 1e150)."""
    return f"{score:.1f}" if score < 1e4 else f"{score:.3g}"


def _detrended(values: list[float]) -> list[float]:
    """Values less their least-squares line."""
    if len(values) < 3:
        return []
    slope, centre = _slope(values), (len(values) - 1) / 2
    mean = statistics.fmean(values)
    return [v - mean - slope * (i - centre) for i, v in enumerate(values)]


def _pooled_slope(runs: list[list[float]]) -> float:
    """Least-squares slope against the index, common to runs that may each sit at its own level."""
    products = squares = 0.0
    for run in runs:
        centre, mean = (len(run) - 1) / 2, statistics.fmean(run) if run else 0.0
        products += sum((i - centre) * (v - mean) for i, v in enumerate(run))
        squares += sum((i - centre) ** 2 for i in range(len(run)))
    return products / squares if squares > 0 else 0.0


def _lag_one(runs: list[list[float]]) -> float:
    """Lag-1 autocorrelation pooled over runs of values less their least-squares line (`_detrended`),
    corrected for the bias of short runs, kept in [0, 0.9].

    About a line fitted to n bars, the estimate is low by about (2 + 6 rho) / n (at n = 20 and
    rho = 0.8 it reads 0.47): read as is, the wander of a few dozen bars of autocorrelated noise
    passes for a jump. The first-order correction adds that bias back, per run.
    """
    products = sum(a * b for run in runs for a, b in itertools.pairwise(run))
    squares = sum(v * v for run in runs for v in run)
    if squares <= 0:
        return 0.0
    rho = products / squares
    rho += len(runs) * (2.0 + 6.0 * rho) / sum(len(run) for run in runs)
    return min(max(rho, 0.0), 0.9)


def _step_estimate(size: int, split: int, rho: float) -> tuple[list[float], float]:
    """Weights of the generalized least-squares estimate of a step at `split` in `size` bars of
    AR(1) noise with lag-1 autocorrelation `rho` (the estimate is the weighted sum of the values),
    and its standard error in spreads.

    With independent bars it is the difference of the means either side (standard error
    sqrt(1 / before + 1 / after)). Autocorrelated noise wanders, and the difference of means
    counts the wander as a step; the estimate weighs most the bars beside the split, where a step
    shows against the noise's innovations, smaller than its spread by sqrt(1 - rho^2) (at 0.8
    and 8 bars a side: 0.59 spreads, against 0.88 for the difference of means).

    >>> [round(w, 3) for w in _step_estimate(4, 2, 0.0)[0]], round(_step_estimate(16, 8, 0.0)[1], 3)
    ([-0.5, -0.5, 0.5, 0.5], 0.5)
    >>> round(_step_estimate(16, 8, 0.8)[1], 3)
    0.588
    """
    ones, step = [1.0] * size, [0.0] * split + [1.0] * (size - split)

    def precision(vector: list[float]) -> list[float]:
        # The inverse of the AR(1) correlation matrix (tridiagonal) applied to `vector`.
        inner = [(1.0 + rho * rho) * v for v in vector]
        inner[0], inner[-1] = vector[0], vector[-1]
        for i in range(size - 1):
            inner[i] -= rho * vector[i + 1]
            inner[i + 1] -= rho * vector[i]
        return [v / (1.0 - rho * rho) for v in inner]

    on_ones, on_step = precision(ones), precision(step)
    a11, a12, a22 = sum(on_ones), sum(on_step), sum(on_step[split:])
    determinant = a11 * a22 - a12 * a12
    weights = [(a11 * s - a12 * o) / determinant for s, o in zip(on_step, on_ones, strict=True)]
    return weights, math.sqrt(a11 / determinant)


def _unstabilise(value: float) -> float:
    """The count whose Anscombe transform is `value`."""
    return max(value / 2.0, 0.0) ** 2 - 0.375


def _slope(values: list[float]) -> float:
    """Least-squares slope of values against their index."""
    n = len(values)
    index_mean, value_mean = (n - 1) / 2, statistics.fmean(values)
    return sum((i - index_mean) * (v - value_mean) for i, v in enumerate(values)) / (n * (n * n - 1) / 12)
