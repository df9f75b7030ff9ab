"""Table specs for pattern events, detections and detector state."""

from qraft_core.store.schema import TS, TableSpec

SPECS: list[TableSpec] = [
    TableSpec(
        "pattern_events",
        {
            "pattern_id": "String",
            "type": "LowCardinality(String)",
            "timestamp": TS,
            "window_start": TS,
            "source_streams": "Array(String)",
            "confidence": "Float64",
            "cross_validated": "UInt8",
            "algorithm": "String",
            "algorithm_version": "String",
            "restart": "UInt8",
            # The whole PatternEvent as JSON: the record of truth for cards and the API.
            "body": "String",
        },
        time_column="window_start",
        dedup_key=("pattern_id",),
    ),
]
