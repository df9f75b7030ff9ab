"""Table specs for features, detections, detector state and pattern events."""

from qraft_core.store.schema import TableSpec

SPECS: list[TableSpec] = []
