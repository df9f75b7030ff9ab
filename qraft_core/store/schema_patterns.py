"""Table specs for pattern events, detections and detector state."""

from qraft_core.store.table_spec import TS, TableSpec

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
        partition_by="toYYYYMM(window_start)",
    ),
    TableSpec(
        "detections",
        {
            "signal_id": "String",
            "window_start": TS,
            "time": TS,
            "detector": "LowCardinality(String)",
            "engine": "LowCardinality(String)",
            "stream": "LowCardinality(String)",
            "type": "LowCardinality(String)",
            "score": "Float64",
            "confidence": "Float64",
            # The whole Signal as JSON (fields, states, params).
            "body": "String",
        },
        time_column="window_start",
        dedup_key=("signal_id",),
        partition_by="toYYYYMM(window_start)",
    ),
    TableSpec(
        "detector_state",
        {
            "window_start": TS,
            "detector": "LowCardinality(String)",
            "stream": "LowCardinality(String)",
            # Encoded by qraft_core.detectors.base.encode_state.
            "state": "String",
            "config_hash": "String",
        },
        time_column="window_start",
        dedup_key=("window_start", "detector", "stream"),
        partition_by="toYYYYMM(window_start)",
    ),
]
