"""Table specs for explanation cards and annotations."""

from qraft_core.store.table_spec import TS, TableSpec

SPECS: list[TableSpec] = [
    TableSpec(
        "pattern_cards",
        {
            "pattern_id": "String",
            "window_start": TS,
            "lang": "LowCardinality(String)",
            # "human" (rule-based, from structured fields only) or "llm" (labelled LLM-based).
            "mode": "LowCardinality(String)",
            "markdown": "String",
            "body": "String",
            "created_at": TS,
        },
        time_column="window_start",
        dedup_key=("pattern_id", "lang", "mode"),
        partition_by="toYYYYMM(window_start)",
    ),
    TableSpec(
        "annotations",
        {
            "annotation_id": "String",
            "pattern_id": "String",
            "label": "LowCardinality(String)",
            "note": "String",
            "author": "String",
            "created_at": TS,
        },
        time_column="created_at",
        dedup_key=("annotation_id",),
    ),
]
