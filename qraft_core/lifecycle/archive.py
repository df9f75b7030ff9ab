"""The cold archive: whole days of raw or clean events as Parquet files on a local folder or an
S3-compatible store (`<table>/date=YYYY-MM-DD/<table>.parquet`, Hive-style, so query engines read
the folder as one partitioned table), optionally removed from ClickHouse once written and read
back; `load` puts archived days back, after which `qraft replay` runs over them as before."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from qraft_core.lifecycle.location import Location, LocationError
from qraft_core.store.base import EventStore

ARCHIVABLE = ("raw_events", "clean_events")
DAY = timedelta(days=1)


def _days(start: date, end: date) -> list[datetime]:
    if end <= start:
        raise LocationError(f"the end day {end} must come after the start day {start}")
    first = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return [first + DAY * n for n in range((end - start).days)]


def _day_file(target: Location, table: str, day: datetime) -> Location:
    return target.child(table, f"date={day:%Y-%m-%d}", f"{table}.parquet")


def _checked(table: str) -> str:
    if table not in ARCHIVABLE:
        raise LocationError(f"only {' and '.join(ARCHIVABLE)} are archived (got {table!r})")
    return table


def archive(store: EventStore, table: str, start: date, end: date, target: Location,
            delete: bool = False) -> dict[str, Any]:
    """Write each day in [start, end) with rows to Parquet; with `delete`, then remove the day
    from the store, once the file read back holds every row."""
    written: dict[str, int] = {}
    for day in _days(start, end):
        frame = store.select(_checked(table), start=day, end=day + DAY)
        if frame.height == 0:
            continue
        file = _day_file(target, table, day)
        target.filesystem.create_dir(file.path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(frame.to_arrow(), file.path, filesystem=target.filesystem, compression="zstd")
        if pq.read_metadata(file.path, filesystem=target.filesystem).num_rows != frame.height:
            raise LocationError(f"{file.url}: the archived file does not hold the {frame.height} rows written")
        if delete:
            store.replace_window(table, day, day + DAY, frame.clear())
        written[f"{day:%Y-%m-%d}"] = frame.height
    return {"table": table, "target": target.url, "days": written, "rows": sum(written.values()),
            "deleted": delete}


def read_day(source: Location, table: str, day: datetime) -> pl.DataFrame | None:
    """One archived day, or None when that day has no file."""
    file = _day_file(source, _checked(table), day)
    if source.filesystem.get_file_info(file.path).type.name == "NotFound":
        return None
    frame = pl.from_arrow(pq.read_table(file.path, filesystem=source.filesystem))
    assert isinstance(frame, pl.DataFrame)
    return frame


def load(store: EventStore, table: str, start: date, end: date, source: Location) -> dict[str, Any]:
    """Put archived days back into the store; each day replaces what the store holds for it."""
    loaded: dict[str, int] = {}
    for day in _days(start, end):
        frame = read_day(source, table, day)
        if frame is not None:
            loaded[f"{day:%Y-%m-%d}"] = store.replace_window(table, day, day + DAY, frame)
    return {"table": table, "source": source.url, "days": loaded, "rows": sum(loaded.values())}
