-- Explanation cards, one row per pattern, language and mode; a re-materialised
-- window replaces its rows, and the newest created_at wins on reads (FINAL).
CREATE TABLE IF NOT EXISTS pattern_cards (
    pattern_id String,
    window_start DateTime64(3, 'UTC'),
    lang LowCardinality(String),
    mode LowCardinality(String),
    markdown String,
    body String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, pattern_id, lang, mode);

-- Human verdicts and notes on patterns; never updated, only added.
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id String,
    pattern_id String,
    label LowCardinality(String),
    note String,
    author String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (pattern_id, annotation_id);
