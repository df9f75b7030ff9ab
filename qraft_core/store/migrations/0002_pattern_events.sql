CREATE TABLE IF NOT EXISTS pattern_events (
    pattern_id String,
    type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    source_streams Array(String),
    confidence Float64,
    cross_validated UInt8,
    algorithm String,
    algorithm_version String,
    restart UInt8,
    body String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, type, pattern_id);
