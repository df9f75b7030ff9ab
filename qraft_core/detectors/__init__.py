"""Online detectors (River and CapyMOA behind one protocol) and the window runner.

Every detector watches one stream: `update(bars) -> list[Signal]`,
`get_state()`, `from_state(...)`, `reset()`. See `base.StreamDetector`.
"""

from qraft_core.detectors.base import DETECTORS, Signal, StreamDetector, decode_state, encode_state
from qraft_core.detectors.capymoa_engine import capymoa_available
from qraft_core.detectors.config import (
    DetectorsConfig,
    DetectorSpec,
    MergeConfig,
    load_default_detectors,
    load_detectors,
)
from qraft_core.detectors.runner import DetectorStateMissing, load_signals, materialize_detections

__all__ = [
    "DETECTORS",
    "DetectorSpec",
    "DetectorStateMissing",
    "DetectorsConfig",
    "MergeConfig",
    "Signal",
    "StreamDetector",
    "capymoa_available",
    "decode_state",
    "encode_state",
    "load_default_detectors",
    "load_detectors",
    "load_signals",
    "materialize_detections",
]
