-- Raw signals of every detector, one row per signal; a window is replaced as a whole.
CREATE TABLE IF NOT EXISTS detections (
    signal_id String,
    window_start DateTime64(3, 'UTC'),
    time DateTime64(3, 'UTC'),
    detector LowCardinality(String),
    engine LowCardinality(String),
    stream LowCardinality(String),
    type LowCardinality(String),
    score Float64,
    confidence Float64,
    body String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, detector, stream, signal_id);

-- Online detector state after each window, so a backfill can start anywhere.
CREATE TABLE IF NOT EXISTS detector_state (
    window_start DateTime64(3, 'UTC'),
    detector LowCardinality(String),
    stream LowCardinality(String),
    state String,
    config_hash String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, detector, stream);
