"""Detector throughput: the River detectors through Qraft's protocol vs a bare River loop, and the
demo's whole detector set (every engine) and the default calibrated set against the same loop; the
demo's CapyMOA detectors through the protocol vs the same models fed by CapyMOA's per-element API.

Both read the same seeded bars in the same run; the bare loop feeds the same
River models the same values without signals, state or explanations. Prints
JSON lines {"bench", "value", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import polars as pl
from river import anomaly, cluster, drift, preprocessing

from qraft_core.detectors import DetectorsConfig, load_default_detectors, load_detectors
from qraft_core.detectors.runner import active_specs, run_window
from qraft_core.detectors.synthetic import synthetic_features

N_BARS = 6000
REPO = Path(__file__).resolve().parents[1]
STREAM = "binance_spot:BTCUSDT"


def bars() -> pl.DataFrame:
    frame = synthetic_features(n_bars=N_BARS, seed=5, vol_shift_at=N_BARS // 2, spikes_at=(1000, 4000),
                               regime_at=5000)
    return frame.filter(pl.col("stream") == STREAM)


# The River detectors of the protocol on the market features (the demo's earlier set), measured
# against the same River models fed by hand.
RIVER_SPECS = [
    {"name": "vol_adwin", "algorithm": "ADWIN", "kind": "concept_drift", "features": ["realized_vol"],
     "params": {"delta": 0.002, "grace_period": 30, "transform": "log"}},
    {"name": "vol_page_hinkley", "algorithm": "PageHinkley", "kind": "concept_drift", "features": ["realized_vol"],
     "params": {"threshold": 8.0, "delta": 0.1, "min_instances": 30, "transform": "log"}},
    {"name": "bar_hst", "algorithm": "HalfSpaceTrees", "kind": "anomaly",
     "features": ["log_return_z", "volume_z", "mean_size_z"],
     "params": {"threshold": 0.95, "n_trees": 10, "height": 6, "window_size": 60}},
    {"name": "regime_dbstream", "algorithm": "DBSTREAM", "kind": "cluster_change",
     "features": ["realized_vol", "volume", "mean_size", "buy_ratio"],
     "params": {"clustering_threshold": 1.0, "jump_distance": 3.0, "persistence": 6}},
]


def river_specs():  # type: ignore[no-untyped-def]
    config = DetectorsConfig.model_validate({"detectors": [{**spec, "engine": "river"} for spec in RIVER_SPECS]})
    return config.enabled


def through_protocol(frame: pl.DataFrame, specs) -> float:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    run_window(specs, {}, frame)
    return frame.height / (time.perf_counter() - began)


def bare_river(frame: pl.DataFrame, specs) -> float:  # type: ignore[no-untyped-def]
    by_algorithm = {s.algorithm: s for s in specs}
    adwin = drift.ADWIN(delta=by_algorithm["ADWIN"].params["delta"])
    ph_params = by_algorithm["PageHinkley"].params
    page_hinkley = drift.PageHinkley(threshold=ph_params["threshold"], delta=ph_params["delta"])
    hst_spec = by_algorithm["HalfSpaceTrees"]
    hst = anomaly.HalfSpaceTrees(n_trees=hst_spec.params["n_trees"], height=hst_spec.params["height"],
                                 window_size=hst_spec.params["window_size"], seed=hst_spec.seed)
    scaler = preprocessing.StandardScaler()
    dbstream = by_algorithm["DBSTREAM"].build(STREAM).effective_params
    clusters = cluster.DBSTREAM(**{k: dbstream[k] for k in (
        "clustering_threshold", "fading_factor", "cleanup_interval", "intersection_factor", "minimum_weight")})
    shape, regime = hst_spec.features, by_algorithm["DBSTREAM"].features
    began = time.perf_counter()
    for row in frame.iter_rows(named=True):
        log_vol = math.log(max(row["realized_vol"], 1e-12))
        adwin.update(log_vol)
        page_hinkley.update(log_vol)
        unit = {f: 0.5 + 0.5 * math.tanh(row[f] / 4.0) for f in shape}
        hst.score_one(unit)
        hst.learn_one(unit)
        point = {f: row[f] for f in regime}
        scaler.learn_one(point)
        scaled = scaler.transform_one(point)
        clusters.learn_one(scaled)
        clusters.predict_one(scaled)
    return frame.height / (time.perf_counter() - began)


def bare_capymoa(frame: pl.DataFrame, specs) -> float:  # type: ignore[no-untyped-def]
    """The same CapyMOA models fed through CapyMOA's own per-element API, without history or signals."""
    models = [(spec.build(STREAM)._new_model(), spec) for spec in specs]
    columns = {f: frame[f].to_list() for _, spec in models for f in spec.features}
    began = time.perf_counter()
    for model, spec in models:
        log_input = spec.params.get("transform") == "log"
        for feature in spec.features:
            for value in columns[feature]:
                model.add_element(math.log(max(value, 1e-12)) if log_input else value)
                model.detected_change()
    return frame.height / (time.perf_counter() - began)


def main() -> None:
    frame = bars()
    specs = river_specs()
    ours = through_protocol(frame, specs)
    bare = bare_river(frame, specs)
    print(json.dumps({"bench": "detection_river_rows_per_s", "value": round(ours, 1), "unit": "rows/s",
                      "baseline": round(bare, 1), "ratio": round(ours / bare, 3)}))
    # Start the JVM outside the timing: it happens once per process.
    everything = active_specs(load_detectors(REPO / "config"))
    trade_specs = [s for s in everything if s.matches(STREAM)]
    all_engines = through_protocol(frame.head(N_BARS // 2), trade_specs)
    print(json.dumps({"bench": "detection_all_engines_rows_per_s", "value": round(all_engines, 1),
                      "unit": "rows/s", "baseline": round(bare, 1), "ratio": round(all_engines / bare, 3)}))
    capymoa = [s for s in trade_specs if s.engine == "capymoa" and s.kind == "concept_drift"]
    if capymoa:
        ours_moa, bare_moa = through_protocol(frame, capymoa), bare_capymoa(frame, capymoa)
        print(json.dumps({"bench": "detection_capymoa_rows_per_s", "value": round(ours_moa, 1), "unit": "rows/s",
                          "baseline": round(bare_moa, 1), "ratio": round(ours_moa / bare_moa, 3),
                          "detectors": [s.name for s in capymoa]}))
    generic = frame.select("bar_time", "stream", "event_count", *[
        pl.col(f).alias(f"{f}_{stat}") for f in ("close", "volume") for stat in ("mean", "min", "max")])
    defaults = through_protocol(generic, load_default_detectors().enabled)
    print(json.dumps({"bench": "detection_defaults_rows_per_s", "value": round(defaults, 1), "unit": "rows/s",
                      "baseline": round(bare, 1), "ratio": round(defaults / bare, 3)}))


if __name__ == "__main__":
    main()
