"""Run the configured detectors over feature windows, carrying their state.

Each window's signals replace that window in `detections`. `detector_state` gets
a marker row for every materialized window and, now and then, a snapshot of
every detector on every stream seen so far; the next run (or a backfill starting
anywhere after a materialized window) resumes from the latest snapshot and
replays the bars since, so it continues exactly where an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
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
# Rows are written after this many windows with bars (empty windows only add marker rows), and
# at least every WRITE_BATCH_SPAN, so one insert touches few of the day-partitioned parts.
WRITE_BATCH_WINDOWS = 30
WRITE_BATCH_SPAN = timedelta(days=30)
# A run writes a snapshot of every detector after its last window with bars, and sooner once a
# stream has fed this many bars since the last snapshot. Resuming replays the bars after the
# latest snapshot, so this bounds that replay (a few hundred ms for the default set on a stream)
# in a run that died half-way, while a stream's state (a few KB) is written once per this many of
# its bars instead of after every window: 1 s bars in 1-minute windows, every 10 minutes.
SNAPSHOT_EVERY_BARS = 600
# Signals kept per detector, stream and window; the rest are counted, not stored. The calibrated
# detectors allow at most 48 alarms a day, and no built-in one raises more than a few per bar, so
# this is reached only by a detector gone wrong, whose flood of findings would otherwise cost
# minutes of pattern and card building per window.
MAX_SIGNALS_PER_WINDOW = 1000


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


def check_materialized(
    store: EventStore, start: datetime, interval: timedelta, first_window: datetime, load: FeatureLoader
) -> None:
    """Raise `DetectorStateMissing` when a window before `start` that had input was never run."""
    previous = start - interval
    latest = store.extent("detector_state", "window_start", [Filter("window_start", "<", start)])
    if latest is not None and utc(latest[1]) >= previous:
        return
    # Windows without bars leave every detector as it was, so they need no run of their own.
    since = utc(latest[1]) + interval if latest else first_window
    # Raw events count too: windows not materialized yet have no bars but are not empty.
    if load(store, since, start).height or store.count("raw_events", start=since, end=start)[""]:
        raise DetectorStateMissing(
            f"no detector state stored for window {iso(previous)}: materialize detections from "
            f"{iso(since)} first (a backfill must start at {iso(first_window)} or right after a "
            "materialized window)"
        )


def latest_snapshot(store: EventStore, before: datetime) -> datetime | None:
    """The last window before `before` whose detector states were written."""
    found = store.extent("detector_state", "window_start",
                         [Filter("window_start", "<", before), Filter("detector", "!=", WINDOW_MARKER)])
    return utc(found[1]) if found else None


def restore_detectors(
    store: EventStore, specs: list[DetectorSpec], snapshot: datetime, interval: timedelta
) -> tuple[dict[tuple[str, str], StreamDetector], list[str]]:
    """The detectors as they were after the `snapshot` window; also the names restarted: those whose
    configuration changed, and those with a stored state that does not load on some stream."""
    rows = store.select("detector_state", start=snapshot, end=snapshot + interval,
                        where=[Filter("detector", "!=", WINDOW_MARKER)])
    by_name = {spec.name: spec for spec in specs}
    detectors: dict[tuple[str, str], StreamDetector] = {}
    changed: set[str] = set()
    damaged: set[str] = set()
    for row in rows.sort("detector", "stream").iter_rows(named=True):
        spec = by_name.get(row["detector"])
        if spec is None:
            continue
        if row["config_hash"] != spec.config_hash:
            # The detector's configuration changed: its old state describes another model.
            changed.add(spec.name)
            continue
        try:
            detectors[(spec.name, row["stream"])] = spec.restore(row["stream"], decode_state(row["state"]))
        except Exception as exc:  # noqa: BLE001 - a damaged row must not block every later window
            log.warning("detector %s: its state on %s after %s does not load (%s: %s); it restarts there "
                        "from a fresh state", spec.name, row["stream"], iso(snapshot), type(exc).__name__, exc)
            damaged.add(spec.name)
    for name in sorted(changed):
        log.warning("detector %s changed configuration: it restarts from a fresh state after %s",
                    name, iso(snapshot))
    return detectors, sorted(changed | damaged)


class DetectorOutputError(ValueError):
    """A detector returned something that is not a usable signal of the window it read."""


def signal_problem(found: object, window: tuple[datetime, datetime] | None) -> str | None:
    """Why one item a detector returned cannot be stored as a signal of `window`, or None.

    A non-finite number would be stored as null and break every later read of the finding; a time
    outside the window would be stored but never become a pattern (patterns are built per window).
    """
    if not isinstance(found, Signal):
        return f"returned a {type(found).__name__}, not a Signal"
    numbers = {"score": found.score, "confidence": found.confidence,
               **{f"fields.{k}": v for k, v in found.fields.items()},
               **{f"extra.{k}": v for k, v in found.extra.items()}}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"returned a signal whose {name} is {value!r}, not a finite number"
    if not 0.0 <= found.confidence <= 1.0:
        return f"returned a signal whose confidence is {found.confidence!r}, not between 0 and 1"
    if window is not None and not (window[0] <= utc(found.time) < window[1]):
        return (f"returned a signal dated {iso(found.time)}, outside its window "
                f"[{iso(window[0])}, {iso(window[1])})")
    return None


class DetectorClock:
    """Seconds each detector spent reading bars, and the bars it read, summed over a run; also its
    failures and the signals it raised beyond MAX_SIGNALS_PER_WINDOW.

    One monotonic clock reading around each call, which feeds a stream's whole window at once, so
    the cost is two clock reads per detector, stream and window, not per bar.
    """

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.bars: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.first_failure: dict[str, str] = {}
        self.signals_dropped: Counter[str] = Counter()

    def failed(self, name: str, stream: str, window_start: datetime | None, error: Exception) -> None:
        """Count a detector that failed on a stream's bars; the first such error of a run is kept."""
        where = stream if window_start is None else f"{stream} in window {iso(window_start)}"
        message = f"{where}: {type(error).__name__}: {error}"
        log.error("detector %s failed on %s; its state on the stream starts afresh", name, message)
        self.failures[name] += 1
        self.first_failure.setdefault(name, message)

    def update(self, name: str, detector: StreamDetector, bars: pl.DataFrame,
               window: tuple[datetime, datetime] | None = None) -> list[Signal]:
        """The detector's signals on these bars; DetectorOutputError when any is unusable."""
        began = time.perf_counter()
        found = detector.update(bars)
        self.seconds[name] += time.perf_counter() - began
        self.bars[name] += bars.height
        if not isinstance(found, list):
            raise DetectorOutputError(f"detector {name} returned a {type(found).__name__}, not a list of signals")
        for item in found:
            problem = signal_problem(item, window)
            if problem is not None:
                raise DetectorOutputError(f"detector {name} {problem}")
        if len(found) > MAX_SIGNALS_PER_WINDOW:
            self.signals_dropped[name] += len(found) - MAX_SIGNALS_PER_WINDOW
            log.warning("detector %s raised %d signals on %s%s; only the first %d are kept", name, len(found),
                        detector.stream, "" if window is None else f" in window {iso(window[0])}",
                        MAX_SIGNALS_PER_WINDOW)
            found = found[:MAX_SIGNALS_PER_WINDOW]
        return found

    def metadata(self, specs: list[DetectorSpec]) -> dict[str, dict[str, float] | dict[str, int] | dict[str, str]]:
        """detector_seconds, detector_bars, detector_failures and detector_signals_dropped of every
        configured detector (0 for one never fed, never failing or within bounds), and the first error
        of each that failed."""
        return {"detector_seconds": {spec.name: round(self.seconds[spec.name], 6) for spec in specs},
                "detector_bars": {spec.name: self.bars[spec.name] for spec in specs},
                "detector_failures": {spec.name: self.failures[spec.name] for spec in specs},
                "detector_first_failure": dict(self.first_failure),
                "detector_signals_dropped": {spec.name: self.signals_dropped[spec.name] for spec in specs}}


def run_window(
    specs: list[DetectorSpec],
    detectors: dict[tuple[str, str], StreamDetector],
    bars: pl.DataFrame,
    clock: DetectorClock | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> list[Signal]:
    """Feed one window's bars to every matching detector (created on first sight of a stream).

    `window` ([start, end)) is where the bars lie: a signal dated outside it is the detector's failure.
    """
    signals: list[Signal] = []
    clock = clock or DetectorClock()
    if bars.height == 0:
        return signals
    for (stream,), stream_bars in sorted(bars.partition_by("stream", as_dict=True, maintain_order=True).items()):
        columns: list[str] | None = None
        for spec in specs:
            key = (spec.name, str(stream))
            if not spec.matches(key[1]):
                continue
            try:
                detector = detectors.get(key)
                if detector is None:
                    features = None
                    if spec.has_globs:
                        columns = feature_columns(stream_bars) if columns is None else columns
                        features = spec.resolve_features(columns)
                        if not features:
                            continue  # nothing on this stream for the detector (yet)
                    detector = detectors[key] = spec.build(key[1], features)
                # Each detector gets its own frame (a clone shares the data): one that changes its
                # input in place must not change what the next detector on the stream reads.
                signals.extend(clock.update(spec.name, detector, stream_bars.clone(), window))
            except Exception as exc:  # noqa: BLE001
                # What a stream holds must not stop the pipeline: a detector that cannot be built, raises
                # on these bars (an overflow, a library's own error) or returns unusable signals is counted
                # in the run's metadata, and its state on the stream, maybe half-updated, is dropped to
                # start afresh.
                clock.failed(spec.name, key[1], None if window is None else window[0], exc)
                detectors.pop(key, None)
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
    window_start: datetime, specs: list[DetectorSpec], detectors: dict[tuple[str, str], StreamDetector],
    clock: DetectorClock,
) -> pl.DataFrame:
    """A snapshot: the state of every detector on every stream after the window. A detector whose
    state cannot be read is counted as failed there and starts afresh."""
    hashes = {spec.name: spec.config_hash for spec in specs}
    rows = []
    for (name, stream), detector in sorted(detectors.items()):
        try:
            state = encode_state(detector.get_state())
        except Exception as exc:  # noqa: BLE001 - a detector's own code may raise anything
            clock.failed(name, stream, window_start, exc)
            del detectors[(name, stream)]
            continue
        rows.append({"window_start": window_start, "detector": name, "stream": stream,
                     "state": state, "config_hash": hashes[name]})
    return pl.DataFrame(rows, schema=_STATE_SCHEMA)


def marker_rows(window_starts: list[datetime]) -> pl.DataFrame:
    """One row per materialized window, so a window never run is told apart from one without bars."""
    n = len(window_starts)
    return pl.DataFrame({"window_start": window_starts, "detector": [WINDOW_MARKER] * n,
                         "stream": [WINDOW_MARKER] * n, "state": [""] * n, "config_hash": [""] * n},
                        schema=_STATE_SCHEMA)


def bars_by_window(features: pl.DataFrame, origin: datetime, interval: timedelta) -> dict[int, pl.DataFrame]:
    """The bars of each window that has any, keyed by the window's index counted from `origin`."""
    if features.height == 0:
        return {}
    origin_ms, interval_ms = int(origin.timestamp() * 1000), int(interval.total_seconds() * 1000)
    index = ((pl.col("bar_time").dt.epoch("ms") - origin_ms) // interval_ms).alias("_window")
    parts = features.with_columns(index).partition_by("_window", as_dict=True, maintain_order=True)
    return {int(key): part.drop("_window") for (key,), part in parts.items()}


def resume_point(
    store: EventStore, start: datetime, interval: timedelta, first_window: datetime, load: FeatureLoader
) -> tuple[datetime | None, datetime]:
    """The last snapshot before `start` (None: start fresh) and the first window after it, whose
    bars must be replayed to reach the state right before `start`."""
    if start <= first_window:
        return None, start
    check_materialized(store, start, interval, first_window, load)
    snapshot = latest_snapshot(store, start)
    return snapshot, snapshot + interval if snapshot else first_window


def replay(
    specs: list[DetectorSpec], detectors: dict[tuple[str, str], StreamDetector],
    by_window: dict[int, pl.DataFrame], first_index: int, origin: datetime, interval: timedelta,
) -> Counter[str]:
    """Feed the windows before `first_index` again (their signals are stored already); returns the
    bars fed per stream. Window `i` starts at `origin + i * interval`, checked as in the first run."""
    fed: Counter[str] = Counter()
    for index in sorted(i for i in by_window if i < first_index):
        window_start = origin + index * interval
        run_window(specs, detectors, by_window[index], window=(window_start, window_start + interval))
        fed.update(by_window[index]["stream"].to_list())
    return fed


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
    """Detections for every window of [start, end), in order, and detector snapshots.

    Windows without bars cost no detector call and no state. A snapshot of every
    detector is written after the run's last window with bars and whenever a stream
    has fed SNAPSHOT_EVERY_BARS bars since the last one; a run resumes from the
    latest snapshot by replaying the stored bars after it (their signals are stored
    already), which gives exactly the state an uninterrupted run has.

    Returns metadata: windows, rows_processed (bars), events_processed (the
    events those bars summarise), signals_by_detector, engines, latency_s (wall
    time of the run, for monitoring only), detector_seconds and detector_bars (each
    detector's time reading the run's bars and how many it read; replayed bars not included),
    restarted (detectors that started afresh: a changed configuration, or a stored state
    that did not load), replayed_bars.
    """
    began = time.perf_counter()
    start, end, first_window = utc(start), utc(end), utc(first_window)
    specs = active_specs(config)
    load = load_features or _default_loader
    signals_by_detector: Counter[str] = Counter()
    rows_processed = events_processed = 0
    detection_frames: list[pl.DataFrame] = []
    state_frames: list[pl.DataFrame] = []
    marked: list[datetime] = []
    written_until = start
    clock = DetectorClock()

    def flush(until: datetime) -> None:
        # Windows are written in batches: the same rows as one by one, far fewer round trips.
        nonlocal written_until
        if until > written_until:
            found = pl.concat(detection_frames) if detection_frames else detection_rows(written_until, [])
            store.replace_window("detections", written_until, until, found)
            store.replace_window("detector_state", written_until, until, pl.concat([marker_rows(marked), *state_frames]))
        detection_frames.clear()
        state_frames.clear()
        marked.clear()
        written_until = until

    with store.session():
        snapshot, replay_from = resume_point(store, start, interval, first_window, load)
        by_window = bars_by_window(load(store, replay_from, end), replay_from, interval)
        first_index = (start - replay_from) // interval
        last_with_bars = max(by_window, default=-1)
        detectors: dict[tuple[str, str], StreamDetector] = {}
        restarted: list[str] = []
        if snapshot is not None and last_with_bars >= first_index:  # no bars to read: no state needed
            detectors, restarted = restore_detectors(store, specs, snapshot, interval)
        since_snapshot = replay(specs, detectors, by_window, first_index, replay_from, interval) if last_with_bars >= first_index \
            else Counter()
        replayed = since_snapshot.total()
        busy = 0  # windows with bars not written yet
        for index, (window_start, window_end) in enumerate(iter_windows(start, end, interval), first_index):
            marked.append(window_start)
            bars = by_window.get(index)
            if bars is not None:
                signals = run_window(specs, detectors, bars, clock, (window_start, window_end))
                if signals:
                    detection_frames.append(detection_rows(window_start, signals))
                signals_by_detector.update(s.detector for s in signals)
                rows_processed += bars.height
                events_processed += int(bars["event_count"].sum())
                since_snapshot.update(bars["stream"].to_list())
                if index == last_with_bars or max(since_snapshot.values()) >= SNAPSHOT_EVERY_BARS:
                    state_frames.append(state_rows(window_start, specs, detectors, clock))
                    since_snapshot.clear()
                busy += 1
            if busy == WRITE_BATCH_WINDOWS or window_end - written_until >= WRITE_BATCH_SPAN:
                flush(window_end)
                busy = 0
        flush(end)
    metadata: dict[str, Any] = {
        "windows": -(-(end - start) // interval),
        "rows_processed": rows_processed,
        "events_processed": events_processed,
        "signals_by_detector": {spec.name: signals_by_detector.get(spec.name, 0) for spec in specs},
        "engines": sorted({spec.engine for spec in specs}),
        "latency_s": round(time.perf_counter() - began, 4),
        **clock.metadata(specs),
        "restarted": restarted,
        "replayed_bars": replayed,
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
