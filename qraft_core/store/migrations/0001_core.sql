-- Raw events as landed. ReplacingMergeTree on the sort key that ends in
-- event_id: a redelivered event collapses into one row, and reads use FINAL.
CREATE TABLE IF NOT EXISTS raw_events (
    event_id String,
    source LowCardinality(String),
    type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    ingest_time DateTime64(3, 'UTC'),
    landed_at DateTime64(3, 'UTC'),
    payload String,
    parser_version LowCardinality(String),
    raw_checksum String
) ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (source, timestamp, event_id);

-- Clean events per partition window; the asset replaces a window, then inserts.
CREATE TABLE IF NOT EXISTS clean_events (
    event_id String,
    source LowCardinality(String),
    type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    ingest_time DateTime64(3, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    payload String,
    repaired UInt8
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (source, timestamp, event_id);

CREATE TABLE IF NOT EXISTS dead_letters (
    letter_id String,
    stage LowCardinality(String),
    source LowCardinality(String),
    reason String,
    raw String,
    event_id String,
    event_time Nullable(DateTime64(3, 'UTC')),
    window_start Nullable(DateTime64(3, 'UTC')),
    received_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(received_at)
ORDER BY (stage, letter_id);

-- Append-only: nothing in Qraft updates or deletes audit rows.
CREATE TABLE IF NOT EXISTS audit_log (
    ts DateTime64(3, 'UTC'),
    actor String,
    action LowCardinality(String),
    target String,
    before String,
    after String,
    detail String
) ENGINE = MergeTree
ORDER BY (ts, action);

CREATE TABLE IF NOT EXISTS source_registry (
    name String,
    type LowCardinality(String),
    owner String,
    schema String,
    retention_days UInt32,
    sensitivity LowCardinality(String),
    status LowCardinality(String),
    description String,
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;
