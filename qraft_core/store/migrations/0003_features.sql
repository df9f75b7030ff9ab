-- Bars computed by the preprocessing pipelines: one row per stream and bar.
-- Feature values sit in parallel arrays (names[i] → values[i]) so pipelines can
-- add features without a schema change; items are the bar's tokens for
-- frequent-pattern mining. A recomputed window replaces its rows; FINAL reads
-- collapse any row written twice.
CREATE TABLE IF NOT EXISTS features (
    window_start DateTime64(3, 'UTC'),
    bar_time DateTime64(3, 'UTC'),
    stream LowCardinality(String),
    event_count UInt32,
    names Array(String),
    values Array(Float64),
    items Array(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(bar_time)
ORDER BY (bar_time, stream);
