"""Rebuilding lost detector state, so one killed run never blocks the windows after it.

Detectors carry state from window to window. When a run dies after writing
some windows but before others, the next window finds no state for the window
before it (`DetectorStateMissing`). Rather than failing, the windows between
the last stored snapshot and the requested start are recomputed (clean events,
features, detections) from that snapshot: the same inputs and the same state
give the same detections, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from qraft_core.clean import clean_windows
from qraft_core.config import QraftConfig
from qraft_core.detectors.config import load_detectors
from qraft_core.detectors.runner import materialize_detections
from qraft_core.events import iso, utc
from qraft_core.features import materialize_features
from qraft_core.operators.pipeline import load_preprocessing
from qraft_core.store.base import EventStore, Filter

log = logging.getLogger(__name__)


def rebuild_start(store: EventStore, before: datetime, first_window: datetime, config: QraftConfig) -> datetime:
    """The first window after the last stored detector snapshot before `before` (or the first window)."""
    with store.session():
        latest = store.extent("detector_state", "window_start", [Filter("window_start", "<", utc(before))])
    return utc(latest[1]) + config.partitions.interval if latest else utc(first_window)


def rebuild_detector_state(
    store: EventStore, config_path: Path, config: QraftConfig, before: datetime, first_window: datetime
) -> datetime:
    """Recompute clean events, features and detections from the last good snapshot up to `before`.

    Returns where the recomputation began (== `before` when nothing was missing).
    """
    since = rebuild_start(store, before, first_window, config)
    if since >= utc(before):
        return utc(before)
    interval = config.partitions.interval
    log.warning("detector state missing before %s: recomputing windows [%s, %s) from the last snapshot",
                iso(before), iso(since), iso(before))
    clean_windows(store, since, before, interval, config.clean)
    materialize_features(store, load_preprocessing(config_path), since, before, interval)
    materialize_detections(store, load_detectors(config_path), since, before, interval, first_window)
    return since
