"""Lifecycle throughput on embedded ClickHouse: the cold archive and a backup.

200,000 raw events over two days in a fresh chDB store. `archive_export` writes them as daily
Parquet files through `qraft_core.lifecycle.archive` (select per day, write, read back the
row count); its baseline is one bare select of all rows written to one Parquet file.
`raw_events_bytes_per_event` is the
table's size on disk per event against the archive's. `backup` is ClickHouse's BACKUP DATABASE to a folder; its baseline copies the store's data
folder file by file. Prints JSON lines {"bench", "value", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from qraft_core.lifecycle.archive import archive
from qraft_core.lifecycle.backup import admin_client, backup
from qraft_core.lifecycle.location import location
from qraft_core.store import open_store

N = 200_000
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def events() -> pl.DataFrame:
    step = timedelta(days=2) / N
    times = [T0 + step * i for i in range(N)]
    return pl.DataFrame({
        "event_id": [f"e{i}" for i in range(N)], "source": ["binance_spot"] * N, "type": ["trade"] * N,
        "timestamp": times, "ingest_time": times, "landed_at": times,
        "payload": [f'{{"p": "{100 + i % 97}", "q": "{1 + i % 5}"}}' for i in range(N)],
        "parser_version": ["bench/1"] * N, "raw_checksum": [f"{i:016x}" for i in range(N)],
    })


def emit(name: str, value: float, baseline: float, unit: str = "rows/s") -> None:
    print(json.dumps({"bench": name, "value": round(value, 1), "unit": unit,
                      "baseline": round(baseline, 1), "ratio": round(value / baseline, 2)}))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="qraft-bench-lifecycle-"))
    try:
        store = open_store(f"chdb://{work / 'clickhouse'}")
        store.insert("raw_events", events())

        began = time.perf_counter()
        store.select("raw_events").write_parquet(work / "bare.parquet", compression="zstd")
        bare = N / (time.perf_counter() - began)
        began = time.perf_counter()
        summary = archive(store, "raw_events", date(2026, 1, 5), date(2026, 1, 7), location(str(work / "archive")))
        assert summary["rows"] == N
        emit("archive_export_rows_per_s", N / (time.perf_counter() - began), bare)
        with admin_client(store, None) as client:
            on_disk = client.query("SELECT sum(bytes_on_disk) FROM system.parts "
                                          "WHERE active AND table = 'raw_events'").result_rows[0][0]
        archived = sum(p.stat().st_size for p in (work / "archive").rglob("*.parquet"))
        # Storage per event: ClickHouse's compressed parts against the archive's zstd Parquet.
        emit("raw_events_bytes_per_event", on_disk / N, archived / N, "bytes/event")

        began = time.perf_counter()
        shutil.copytree(work / "clickhouse", work / "copy")
        copied = N / (time.perf_counter() - began)
        began = time.perf_counter()
        backup(store, location(str(work / "backup")), {})
        emit("backup_rows_per_s", N / (time.perf_counter() - began), copied)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
