"""Table specs for the features table."""

from qraft_core.store.table_spec import TS, TableSpec

SPECS: list[TableSpec] = [
    TableSpec(
        "features",
        {
            "window_start": TS,
            "bar_time": TS,
            "stream": "LowCardinality(String)",
            "event_count": "UInt32",
            "names": "Array(String)",
            "values": "Array(Float64)",
            "items": "Array(String)",
        },
        time_column="bar_time",
        dedup_key=("bar_time", "stream"),
        partition_by="toYYYYMM(bar_time)",
    ),
]
