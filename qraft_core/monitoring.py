"""Pipeline health from what the store and the replay registry hold, as Prometheus metrics.

`PipelineCollector` computes its values on each scrape (the API serves it at `/metrics`):

- windows behind: closed windows the detectors have not reached. A window is closed as the
  scheduler closes it (qraft_core/scheduling.py): the newest landed event time minus the
  allowed lateness has passed its end, or nothing has landed for the allowed lateness. The
  detectors' reach is the newest window of `detector_state`, which they write for every window.
- findings per window, per type: over the newest `RECENT_WINDOWS` detected windows and over
  every detected window, so a storm is judged against the stream's own rate, not a constant.
- replays by status, from the replay registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qraft_core.config import PartitionsConfig
from qraft_core.replays import ReplayRegistry
from qraft_core.scheduling import floor_to, partition_start
from qraft_core.store.base import EventStore, Filter

# Ten windows smooth out one busy window yet still show a storm within minutes at 1-minute windows.
RECENT_WINDOWS = 10
REPLAY_STATUSES = ("running", "succeeded", "failed", "regression")

# name: (help, labels): the families this collector yields, for panels, rules and their tests.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "qraft_windows_behind": ("Closed windows the detectors have not processed yet", ()),
    "qraft_window_seconds": ("Length of one window (partitions.interval_minutes)", ()),
    "qraft_newest_closed_window_end_seconds": ("End of the newest closed window (Unix time)", ()),
    "qraft_newest_detected_window_end_seconds": ("End of the newest window the detectors processed", ()),
    "qraft_recent_findings_per_window": (f"Findings per window over the newest {RECENT_WINDOWS} detected windows",
                                         ("type",)),
    "qraft_findings_per_window": ("Findings per window over every detected window", ("type",)),
    "qraft_replays": ("Replays in the registry by status", ("status",)),
}


@dataclass(frozen=True)
class PipelineState:
    closed_end: datetime | None
    detected: tuple[datetime, datetime] | None  # first window start, newest window end
    windows_behind: int
    recent: dict[str, float]
    overall: dict[str, float]


def newest_closed_window_end(store: EventStore, partitions: PartitionsConfig, now: datetime) -> datetime | None:
    """The end of the newest window the scheduler would close now, None before any event landed."""
    newest = store.extent("raw_events", "timestamp")
    landed = store.extent("raw_events", "landed_at")
    if newest is None or landed is None:
        return None
    lateness = timedelta(seconds=partitions.allowed_lateness_s)
    if now - landed[1] >= lateness:
        # The stream went quiet: the window holding its newest event closes too.
        return floor_to(newest[1], partitions.interval) + partitions.interval
    return floor_to(newest[1] - lateness, partitions.interval)


def pipeline_state(store: EventStore, partitions: PartitionsConfig, now: datetime) -> PipelineState:
    interval = partitions.interval
    recent: dict[str, float] = {}
    overall: dict[str, float] = {}
    with store.session():
        closed_end = newest_closed_window_end(store, partitions, now)
        reach = store.extent("detector_state", "window_start")
        detected = (reach[0], reach[1] + interval) if reach else None
        if detected:
            windows = max(1, (detected[1] - detected[0]) // interval)
            recent_windows = min(RECENT_WINDOWS, windows)
            since = detected[1] - recent_windows * interval
            counts = store.count("pattern_events", group_by="type")
            recent_counts = store.count("pattern_events", where=[Filter("window_start", ">=", since)],
                                        group_by="type")
            overall = {t: n / windows for t, n in counts.items()}
            recent = {t: recent_counts.get(t, 0) / recent_windows for t in counts}
    reached = detected[1] if detected else partition_start(partitions, now)
    behind = max(0, (closed_end - reached) // interval) if closed_end else 0
    return PipelineState(closed_end, detected, behind, recent, overall)


def replay_counts(directory: Path) -> dict[str, int]:
    registry = ReplayRegistry(directory)
    counts = dict.fromkeys(REPLAY_STATUSES, 0)
    for path in directory.glob("*.json"):
        record = registry.get(path.stem)
        if record is not None:
            counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def _gauge(name: str) -> GaugeMetricFamily:
    help_text, labels = FAMILIES[name]
    return GaugeMetricFamily(name, help_text, labels=list(labels) or None)


class PipelineCollector(Collector):
    """The families in FAMILIES, computed from the store and the replay registry on each collect."""

    def __init__(self, store: EventStore, partitions: PartitionsConfig, replays_dir: Path,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.partitions, self.replays_dir, self.clock = store, partitions, replays_dir, clock

    def describe(self) -> Iterator[Metric]:
        return iter([_gauge(name) for name in FAMILIES])

    def collect(self) -> Iterator[Metric]:
        state = pipeline_state(self.store, self.partitions, self.clock())
        families = {name: _gauge(name) for name in FAMILIES}
        families["qraft_windows_behind"].add_metric([], state.windows_behind)
        families["qraft_window_seconds"].add_metric([], self.partitions.interval.total_seconds())
        if state.closed_end is not None:
            families["qraft_newest_closed_window_end_seconds"].add_metric([], state.closed_end.timestamp())
        if state.detected is not None:
            families["qraft_newest_detected_window_end_seconds"].add_metric([], state.detected[1].timestamp())
        for type_, rate in sorted(state.recent.items()):
            families["qraft_recent_findings_per_window"].add_metric([type_], rate)
        for type_, rate in sorted(state.overall.items()):
            families["qraft_findings_per_window"].add_metric([type_], rate)
        for status, count in sorted(replay_counts(self.replays_dir).items()):
            families["qraft_replays"].add_metric([status], count)
        return iter(families.values())
