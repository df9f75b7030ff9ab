"""Pattern events: raw detector signals merged into findings (the seed's schema B)."""

from qraft_core.patterns.materialize import (
    load_pattern_events,
    materialize_patterns,
    metric_changes,
)
from qraft_core.patterns.merge import apply_cooldown, combined_confidence, group_signals

__all__ = [
    "apply_cooldown",
    "combined_confidence",
    "group_signals",
    "load_pattern_events",
    "materialize_patterns",
    "metric_changes",
]
