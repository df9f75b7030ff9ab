"""Data lifecycle: backup and restore, a cold archive to Parquet, detector-state compaction."""
