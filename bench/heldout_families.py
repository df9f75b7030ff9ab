"""A third labelled set for the default detectors: 27 families written apart from the corpus and
the operations scenarios (batch sawtooths, low-rate counts, quantized readings, latency tails,
trends, daily and weekly cycles with a holiday, missing rows, two-level streams, spikes and steps
of graded sizes at 1 s, 1 min and 1 h).

Each family: (rng) -> (times_s, values, planted [(type, sample index)]), seeded by
np.random.default_rng([family index, seed]).  Streams are scored in-process with
qraft_core.demo.quality.detect (the pipeline's merge), as bench/bench_quality.py does.

Usage: uv run python bench/heldout_families.py [--seeds 1-5] [--families a,b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime

import numpy as np

from qraft_core.demo.corpus import Stream
from qraft_core.demo.scenarios import labelled_stream

START_S = 1_717_372_800  # 2024-06-03 00:00 UTC, a Monday
DAY = 86_400
Series = tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]


def mins(n: int, step: int = 60) -> np.ndarray:
    return START_S + np.arange(n) * step


# ---------------- families ----------------
def sawtooth_period(rng) -> Series:
    """A batch job's backlog: sawtooth, period 60 min, becomes 90 min at 6000 (1-min samples)."""
    n = 12_000
    t = np.arange(n)
    phase = np.where(t < 6000, (t % 60) / 60, ((t - 6000) % 90) / 90)
    return mins(n), np.round(100 * phase + rng.normal(0, 2, n), 2), [("concept_drift", 6000)]


def sawtooth_steady(rng) -> Series:
    n = 12_000
    t = np.arange(n)
    return mins(n), np.round(100 * (t % 60) / 60 + rng.normal(0, 2, n), 2), []


def poisson_low(rng, double: bool = True) -> Series:
    n = 12_000
    lam = np.full(n, 0.3)
    if double:
        lam[6000:] = 0.6
    return mins(n), rng.poisson(lam).astype(float), [("concept_drift", 6000)] if double else []


def quantized_shift(rng) -> Series:
    n = 10_000
    x = 20 + rng.normal(0, 0.5, n)
    x[5000:] += 1.5  # three quanta (= 3 sigma)
    return mins(n), np.round(x * 2) / 2, [("concept_drift", 5000)]


def lognormal_tail(rng) -> Series:
    n = 10_000
    sigma = np.where(np.arange(n) < 5000, 0.4, 0.9)
    return mins(n, 10), np.round(np.exp(np.log(120) + sigma * rng.normal(size=n)), 1), [("concept_drift", 5000)]


def lognormal_steady(rng) -> Series:
    n = 10_000
    return mins(n, 10), np.round(np.exp(np.log(120) + 0.6 * rng.normal(size=n)), 1), []


def trend_slope_change(rng) -> Series:
    n = 10_000
    t = np.arange(n, dtype=float)
    level = 0.001 * t + np.where(t >= 5000, 0.02 * (t - 5000), 0.0)  # 0.001 -> 0.021 sigma/bar
    return mins(n), np.round(50 + level + rng.normal(0, 1, n), 3), [("concept_drift", 5000)]


def trend_steady(rng) -> Series:
    n = 10_000
    t = np.arange(n, dtype=float)
    return mins(n), np.round(50 + 0.002 * t + rng.normal(0, 1, n), 3), []


def diurnal_weekly_holiday(rng) -> Series:
    """5-min samples for 5 weeks; weekday office load, weekends low; a Wednesday holiday in week 4."""
    n = 35 * 288
    times = mins(n, 300)
    h = ((times % DAY) / 3600)
    day = (times - START_S) // DAY
    wd = day % 7
    off = (wd >= 5) | (day == 23)  # day 23 = Wednesday of week 4 (holiday)
    load = 30 + np.where(off, 8, 40) * np.exp(-(((h - 13) / 3.5) ** 2))
    return times, np.round(load + rng.normal(0, 2, n), 2), []


def missing_20pct_spike(rng) -> Series:
    n = 12_000
    x = 10 + rng.normal(0, 1, n)
    x[7000] += 8
    keep = rng.random(n) >= 0.2
    keep[7000] = True
    idx = np.flatnonzero(keep)
    planted_at = int(np.searchsorted(idx, 7000))
    return mins(n)[keep], np.round(x[keep], 3), [("anomaly", planted_at)]


def missing_20pct_nothing(rng) -> Series:
    n = 12_000
    keep = rng.random(n) >= 0.2
    return mins(n)[keep], np.round(10 + rng.normal(0, 1, n)[keep], 3), []


def bimodal_iid(rng) -> Series:
    """Two regimes (10 and 20) drawn independently per sample, 50/50: nothing planted."""
    n = 10_000
    x = np.where(rng.random(n) < 0.5, 10.0, 20.0) + rng.normal(0, 1, n)
    return mins(n), np.round(x, 3), []


def bimodal_switching(rng) -> Series:
    """Two regimes alternating with mean dwell 30 samples (a Markov switch): nothing planted."""
    n = 10_000
    state = np.empty(n, dtype=int)
    s = 0
    for i in range(n):
        if rng.random() < 1 / 30:
            s = 1 - s
        state[i] = s
    return mins(n), np.round(np.where(state, 20.0, 10.0) + rng.normal(0, 1, n), 3), []


def spikes(size: float) -> Callable:
    def f(rng) -> Series:
        n = 10_000
        x = 50 + rng.normal(0, 1, n)
        at = list(range(1500, 9500, 800))  # 10 spikes
        for a in at:
            x[a] += size * (1 if rng.random() < 0.5 else -1)
        return mins(n), np.round(x, 3), [("anomaly", a) for a in at]
    return f


def shift(size: float) -> Callable:
    def f(rng) -> Series:
        n = 6000
        x = 50 + rng.normal(0, 1, n)
        x[3000:] += size * (1 if rng.random() < 0.5 else -1)
        return mins(n), np.round(x, 3), [("concept_drift", 3000)]
    return f


def shift_sampling(step: int) -> Callable:
    def f(rng) -> Series:
        n = 8000
        x = 50 + rng.normal(0, 1, n)
        x[4000:] += 3
        return mins(n, step), np.round(x, 3), [("concept_drift", 4000)]
    return f


FAMILIES: dict[str, Callable] = {
    "sawtooth-period-change": sawtooth_period,
    "sawtooth-steady": sawtooth_steady,
    "poisson0.3-doubling": poisson_low,
    "poisson0.3-steady": lambda rng: poisson_low(rng, False),
    "quantized0.5-shift3q": quantized_shift,
    "lognormal-tail-change": lognormal_tail,
    "lognormal-steady": lognormal_steady,
    "trend-slope-change": trend_slope_change,
    "trend-steady": trend_steady,
    "diurnal-weekly-holiday": diurnal_weekly_holiday,
    "missing20-spike8": missing_20pct_spike,
    "missing20-nothing": missing_20pct_nothing,
    "bimodal-iid": bimodal_iid,
    "bimodal-switching": bimodal_switching,
    "spike-3sigma": spikes(3), "spike-5sigma": spikes(5), "spike-10sigma": spikes(10),
    "shift-0.5sigma": shift(0.5), "shift-1sigma": shift(1), "shift-2sigma": shift(2), "shift-4sigma": shift(4),
    "shift3-1s": shift_sampling(1), "shift3-1m": shift_sampling(60), "shift3-1h": shift_sampling(3600),
    # added after the first run (appended so earlier families keep their seeds)
    "shift-3sigma": shift(3), "shift-6sigma": shift(6), "shift-8sigma": shift(8),
}


def make(name: str, seed: int) -> Stream:
    rng = np.random.default_rng([list(FAMILIES).index(name), seed, 7331])
    times, values, planted = FAMILIES[name](rng)
    return labelled_stream(f"{name}-s{seed}", name, times, values, planted)


def run_one(args: tuple[str, int]) -> dict:
    from qraft_core.demo.quality import detect
    name, seed = args
    s = make(name, seed)
    findings, signals = detect([s])
    times = s.bars["bar_time"].to_list()

    def row(t: datetime) -> int:  # index of the bar at or before t
        import bisect
        return max(0, bisect.bisect_right(times, t) - 1)

    out = {"family": name, "seed": seed, "kind": s.family, "rows": s.bars.height, "bar_s": s.bar_s,
           "findings": [], "truth": []}
    for f in findings:
        inside = any(t.start <= f.time <= t.end for t in s.truth)
        out["findings"].append({"type": f.type, "detector": f.id, "row": row(f.time), "inside": inside})
    for t in s.truth:
        match = [f for f in findings if t.start <= f.time <= t.end
                 and (t.type != "concept_drift" or f.type == "concept_drift")]
        any_type = [f for f in findings if t.start <= f.time <= t.end]
        out["truth"].append({"type": t.type, "row": row(t.time),
                             "found": bool(match), "found_any_type": bool(any_type),
                             "delay_bars": (min(f.time for f in match) - t.time).total_seconds() / s.bar_s
                             if match else None})
    return out


def summarize(results: list[dict]) -> None:
    fams: dict[str, list[dict]] = {}
    for r in results:
        fams.setdefault(r["family"], []).append(r)
    print(f"{'family':26s} {'kind':7s} {'rows':>7s} {'recall':>7s} {'prec':>6s} {'FA/10k':>7s} "
          f"{'delay(med)':>10s} detectors(false)")
    for name, rs in fams.items():
        rows = sum(r["rows"] for r in rs)
        truth = [t for r in rs for t in r["truth"]]
        finds = [f for r in rs for f in r["findings"]]
        found = sum(t["found"] for t in truth)
        windows_found = sum(t["found_any_type"] for t in truth)
        false = [f for f in finds if not f["inside"]]
        delays = [t["delay_bars"] for t in truth if t["delay_bars"] is not None]
        det: dict[str, int] = {}
        for f in false:
            det[f"{f['type']}"] = det.get(f["type"], 0) + 1
        rec = f"{found}/{len(truth)}" if truth else "-"
        prec = f"{windows_found / len(finds):.2f}" if finds and truth else "-"
        print(f"{name:26s} {rs[0]['kind']:7s} {rows:7d} {rec:>7s} {prec:>6s} {1e4 * len(false) / rows:7.2f} "
              f"{(np.median(delays) if delays else float('nan')):10.1f} {det}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1-5")
    p.add_argument("--families", default="")
    p.add_argument("--json", default="")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    lo, hi = (int(x) for x in a.seeds.split("-"))
    names = [n for n in FAMILIES if not a.families or n in a.families.split(",")]
    jobs = [(n, s) for n in names for s in range(lo, hi + 1)]
    with ProcessPoolExecutor(a.workers) as ex:
        results = list(ex.map(run_one, jobs))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    summarize(results)


if __name__ == "__main__":
    main()
