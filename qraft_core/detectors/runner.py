"""Run the configured detectors over feature windows, carrying their state.

Each window's signals replace that window in `detections`; the state of every
detector on every stream seen so far is written to `detector_state` for the
window, so the next window (or a backfill starting there) continues exactly.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from qraft_core.detectors.base import Signal, StreamDetector, decode_state, encode_state
from qraft_core.detectors.capymoa_engine import capymoa_available
from qraft_core.detectors.config import NOT_FEATURES, DetectorsConfig, DetectorSpec
from qraft_core.events import iso, stable_id, utc
from qraft_core.store.base import EventStore, Filter, iter_windows
from qraft_core.store.schema import spec as table_spec

if TYPE_CHECKING:
    from qraft_core.tracking import Tracker

log = logging.getLogger(__name__)

FeatureLoader = Callable[[EventStore, datetime, datetime], pl.DataFrame]
# The row written for every materialized window, even one without any stream yet,
# so a missing snapshot is told apart from a window where nothing ran.
WINDOW_MARKER = "*"
WRITE_BATCH_WINDOWS = 30


class DetectorStateMissing(RuntimeError):
    """The window before a backfill's start has no stored detector state."""


def _default_loader(store: EventStore, start: datetime, end: datetime) -> pl.DataFrame:
    from qraft_core.features import load_features

    return load_features(store, start, end)


def active_specs(config: DetectorsConfig) -> list[DetectorSpec]:
    """Enabled detectors this process can run (CapyMOA ones only when it loads)."""
    specs = config.enabled
    if any(spec.engine == "capymoa" for spec in specs) and not capymoa_available():
        specs = [spec for spec in specs if spec.engine != "capymoa"]
    return specs


def restore_detectors(
    store: EventStore,
    specs: list[DetectorSpec],
    start: datetime,
    interval: timedelta,
    first_window: datetime,
    load: FeatureLoader = _default_loader,
) -> tuple[dict[tuple[str, str], StreamDetector], list[str]]:
    """The detectors as they were after the window before `start`; also the names restarted."""
    if utc(start) == utc(first_window):
        return {}, []
    previous = utc(start) - interval
    rows = store.select("detector_state", start=previous, end=previous + interval)
    if rows.height == 0:
        # Windows without bars leave every detector as it was, so the latest earlier snapshot (or a
        # fresh start, when there is none) is exact as long as nothing arrived in between.
        latest = store.extent("detector_state", "window_start", [Filter("window_start", "<", utc(start))])
        since = latest[1] + interval if latest else utc(first_window)
        # Raw events count too: windows not materialized yet have no bars but are not empty.
        if load(store, since, utc(start)).height or store.count("raw_events", start=since, end=utc(start))[""]:
            raise DetectorStateMissing(
                f"no detector state stored for window {iso(previous)}: materialize detections from "
                f"{iso(since)} first (a backfill must start at {iso(first_window)} or right after a "
                "materialized window)"
            )
        if latest is None:
            return {}, []
        rows = store.select("detector_state", start=latest[1], end=latest[1] + interval)
    by_name = {spec.name: spec for spec in specs}
    detectors: dict[tuple[str, str], StreamDetector] = {}
    restarted: set[str] = set()
    for row in rows.sort("detector", "stream").iter_rows(named=True):
        spec = by_name.get(row["detector"])
        if spec is None:
            continue
        if row["config_hash"] != spec.config_hash:
            # The detector's configuration changed: its old state describes another model.
            restarted.add(spec.name)
            continue
        detectors[(spec.name, row["stream"])] = spec.restore(row["stream"], decode_state(row["state"]))
    for name in sorted(restarted):
        log.warning("detector %s changed configuration: it restarts from a fresh state at %s", name, iso(start))
    return detectors, sorted(restarted)


def run_window(
    specs: list[DetectorSpec],
    detectors: dict[tuple[str, str], StreamDetector],
    bars: pl.DataFrame,
) -> list[Signal]:
    """Feed one window's bars to every matching detector (created on first sight of a stream)."""
    signals: list[Signal] = []
    if bars.height == 0:
        return signals
    for (stream,), stream_bars in sorted(bars.partition_by("stream", as_dict=True, maintain_order=True).items()):
        columns: list[str] | None = None
        for spec in specs:
            if not spec.matches(str(stream)):
                continue
            detector = detectors.get((spec.name, str(stream)))
            if detector is None:
                features = None
                if spec.has_globs:
                    columns = feature_columns(stream_bars) if columns is None else columns
                    features = spec.resolve_features(columns)
                    if not features:
                        continue  # nothing on this stream for the detector (yet)
                detector = detectors[(spec.name, str(stream))] = spec.build(str(stream), features)
            signals.extend(detector.update(stream_bars))
    return signals


def feature_columns(stream_bars: pl.DataFrame) -> list[str]:
    """The numeric columns a stream's bars carry values in (what feature globs match)."""
    return [
        name for name, dtype in stream_bars.schema.items()
        if name not in NOT_FEATURES and dtype.is_numeric() and stream_bars[name].null_count() < stream_bars.height
    ]


def detection_rows(window_start: datetime, signals: list[Signal]) -> pl.DataFrame:
    rows = [
        {
            "signal_id": stable_id("signal", s.detector, s.stream, iso(s.time), s.group),
            "window_start": window_start,
            "time": s.time,
            "detector": s.detector,
            "engine": s.engine,
            "stream": s.stream,
            "type": s.type,
            "score": s.score,
            "confidence": s.confidence,
            "body": _json(s.to_json()),
        }
        for s in signals
    ]
    return pl.DataFrame(rows, schema=_DETECTION_SCHEMA)


def state_rows(
    window_start: datetime, specs: list[DetectorSpec], detectors: dict[tuple[str, str], StreamDetector]
) -> pl.DataFrame:
    hashes = {spec.name: spec.config_hash for spec in specs}
    rows = [{"window_start": window_start, "detector": WINDOW_MARKER, "stream": WINDOW_MARKER,
             "state": "", "config_hash": ""}]
    for (name, stream), detector in sorted(detectors.items()):
        rows.append({"window_start": window_start, "detector": name, "stream": stream,
                     "state": encode_state(detector.get_state()), "config_hash": hashes[name]})
    return pl.DataFrame(rows, schema=_STATE_SCHEMA)


def materialize_detections(
    store: EventStore,
    config: DetectorsConfig,
    start: datetime,
    end: datetime,
    interval: timedelta,
    first_window: datetime,
    tracking: Tracker | None = None,
    load_features: FeatureLoader | None = None,
) -> dict[str, Any]:
    """Detections and detector state for every window of [start, end), in order.

    Returns metadata: windows, rows_processed (bars), events_processed (the
    events those bars summarise), signals_by_detector, engines, latency_s (wall
    time of the run, for monitoring only), restarted (detectors whose changed
    configuration made them start afresh).
    """
    began = time.perf_counter()
    start, end = utc(start), utc(end)
    specs = active_specs(config)
    load = load_features or _default_loader
    signals_by_detector: Counter[str] = Counter()
    rows_processed = events_processed = windows = 0
    detection_frames: list[pl.DataFrame] = []
    state_frames: list[pl.DataFrame] = []
    written_until = start

    def flush(until: datetime) -> None:
        # Windows are written in batches: the same rows as one by one, far fewer round trips.
        nonlocal written_until
        if until > written_until:
            store.replace_window("detections", written_until, until, pl.concat(detection_frames))
            store.replace_window("detector_state", written_until, until, pl.concat(state_frames))
        detection_frames.clear()
        state_frames.clear()
        written_until = until

    with store.session():
        detectors, restarted = restore_detectors(store, specs, start, interval, first_window, load)
        features = load(store, start, end)
        for window_start, window_end in iter_windows(start, end, interval):
            bars = features.filter(
                (pl.col("bar_time") >= window_start) & (pl.col("bar_time") < window_end)
            ) if features.height else features
            signals = run_window(specs, detectors, bars)
            detection_frames.append(detection_rows(window_start, signals))
            state_frames.append(state_rows(window_start, specs, detectors))
            signals_by_detector.update(s.detector for s in signals)
            rows_processed += bars.height
            events_processed += int(bars["event_count"].sum()) if bars.height else 0
            windows += 1
            if windows % WRITE_BATCH_WINDOWS == 0:
                flush(window_end)
        flush(end)
    metadata: dict[str, Any] = {
        "windows": windows,
        "rows_processed": rows_processed,
        "events_processed": events_processed,
        "signals_by_detector": {spec.name: signals_by_detector.get(spec.name, 0) for spec in specs},
        "engines": sorted({spec.engine for spec in specs}),
        "latency_s": round(time.perf_counter() - began, 4),
        "restarted": restarted,
    }
    if tracking is not None:
        tracking.log_detections(config, start, end, metadata)
    return metadata


def load_signals(store: EventStore, start: datetime, end: datetime) -> list[Signal]:
    """Stored signals whose window lies in [start, end), in time order."""
    rows = store.select("detections", start=start, end=end, columns=["body"])
    signals = [Signal.from_json(json.loads(body)) for body in rows["body"].to_list()]
    return sorted(signals, key=lambda s: (s.time, s.stream, s.type, s.detector, s.group))


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


_DETECTION_SCHEMA = table_spec("detections").frame_schema
_STATE_SCHEMA = table_spec("detector_state").frame_schema
