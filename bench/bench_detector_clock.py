"""Cost of timing each detector: the bundled detector set fed one-minute windows of bars through
`run_window` (each detector's call timed by `DetectorClock`) vs the same detectors, built the same way,
fed the same windows by calling them directly.

Windows of 6 bars (10 s bars in one-minute windows) make the clock reads as frequent relative to the
work as they get in practice. Both arms run in the same process; the order alternates to cancel
warm-up. Prints JSON lines {"bench", "value", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl

from qraft_core.detectors import load_detectors
from qraft_core.detectors.runner import DetectorClock, active_specs, run_window
from qraft_core.detectors.synthetic import synthetic_features

REPO = Path(__file__).resolve().parents[1]
N_BARS = 3000
BARS_PER_WINDOW = 6
ROUNDS = 3


def windows() -> list[pl.DataFrame]:
    bars = synthetic_features(n_bars=N_BARS, seed=5, vol_shift_at=N_BARS // 2, spikes_at=(700, 2100),
                              streams=("binance_spot:BTCUSDT",))
    return [bars.slice(i, BARS_PER_WINDOW) for i in range(0, bars.height, BARS_PER_WINDOW)]


def clocked(parts: list[pl.DataFrame], specs) -> float:  # type: ignore[no-untyped-def]
    detectors: dict = {}
    clock = DetectorClock()
    began = time.perf_counter()
    for part in parts:
        run_window(specs, detectors, part, clock)
    return time.perf_counter() - began


def direct(parts: list[pl.DataFrame], specs) -> float:  # type: ignore[no-untyped-def]
    stream = parts[0]["stream"][0]
    detectors = [spec.build(stream, None) for spec in specs if spec.matches(stream)]
    began = time.perf_counter()
    for part in parts:
        for detector in detectors:
            detector.update(part)
    return time.perf_counter() - began


def main() -> None:
    parts = windows()
    specs = [spec for spec in active_specs(load_detectors(REPO / "config")) if not spec.has_globs]
    ours, bare = [], []
    for round_ in range(ROUNDS):
        arms = [(clocked, ours), (direct, bare)]
        for run, times in arms if round_ % 2 == 0 else reversed(arms):
            times.append(run(parts, specs))
    bars = sum(p.height for p in parts)
    value, baseline = bars / min(ours), bars / min(bare)
    print(json.dumps({"bench": "detection_clocked_windows_rows_per_s", "value": round(value, 1), "unit": "rows/s",
                      "baseline": round(baseline, 1), "ratio": round(value / baseline, 3)}))


if __name__ == "__main__":
    main()
