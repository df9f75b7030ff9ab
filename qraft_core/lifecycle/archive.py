"""The cold archive: whole days of raw or clean events as Parquet files on a local folder or an
S3-compatible store (`<table>/date=YYYY-MM-DD/<table>.parquet`, Hive-style, so query engines read
the folder as one partitioned table), optionally removed from ClickHouse once written and read
back; `load` puts archived days back, after which `qraft replay` runs over them as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from qraft_core.lifecycle.location import Location, LocationError
from qraft_core.store.base import STORE_TIME_RANGE, EventStore, Filter
from qraft_core.store.schema import spec

ARCHIVABLE = ("raw_events", "clean_events")
DAY = timedelta(days=1)
DAY_FOLDER = "date="


def _window(start: date, end: date) -> tuple[datetime, datetime]:
    if end <= start:
        raise LocationError(f"the end day {end} must come after the start day {start}")
    low, high = STORE_TIME_RANGE
    if start < low.date() or end > high.date() + DAY:
        raise LocationError(f"the days {start} to {end} reach outside the years {low.year}-{high.year} the store holds")
    return datetime(start.year, start.month, start.day, tzinfo=UTC), datetime(end.year, end.month, end.day, tzinfo=UTC)


def _stored_days(store: EventStore, table: str, start: date, end: date) -> Iterator[datetime]:
    """The days in [start, end) the store holds rows of, each found by one query for the earliest
    row from the day after the last one found, so empty stretches cost nothing."""
    cursor, stop = _window(start, end)
    time_column = spec(table).time_column or ""
    while cursor < stop:
        found = store.extent(table, time_column, [Filter(time_column, ">=", cursor), Filter(time_column, "<", stop)])
        if found is None:
            return
        first = found[0].astimezone(UTC)
        day = datetime(first.year, first.month, first.day, tzinfo=UTC)
        yield day
        cursor = day + DAY


def _archived_days(source: Location, table: str, start: date, end: date) -> list[datetime]:
    """The days in [start, end) that have a folder under `source` (one listing)."""
    first, stop = _window(start, end)
    listing = fs.FileSelector(source.child(table).path, allow_not_found=True)
    days = []
    for entry in source.filesystem.get_file_info(listing):
        name = entry.base_name
        if entry.type == fs.FileType.Directory and name.startswith(DAY_FOLDER):
            try:
                day = datetime.strptime(name.removeprefix(DAY_FOLDER), "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                continue  # not a folder of the archive's
            if first <= day < stop:
                days.append(day)
    return sorted(days)


def _day_file(target: Location, table: str, day: datetime) -> Location:
    return target.child(table, f"{DAY_FOLDER}{day:%Y-%m-%d}", f"{table}.parquet")


def _checked(table: str) -> str:
    if table not in ARCHIVABLE:
        raise LocationError(f"only {' and '.join(ARCHIVABLE)} are archived (got {table!r})")
    return table


def _read(file: Location) -> pl.DataFrame:
    try:
        frame = pl.from_arrow(pq.read_table(file.path, filesystem=file.filesystem))
    except pa.ArrowException as exc:  # ArrowInvalid, ArrowIOError: a damaged or cut-short file
        reason = str(exc).splitlines()[0].rsplit(": ", 1)[-1]
        raise LocationError(f"{file.url}: not a readable Parquet file ({reason})") from None
    assert isinstance(frame, pl.DataFrame)
    return frame


def _merged(table: str, archived: pl.DataFrame, new: pl.DataFrame, file: Location) -> pl.DataFrame:
    """The day's archived rows with the new ones, one row per key; a new row wins, being what the
    store holds now (the later landing of that event)."""
    table_spec = spec(table)
    missing = [column for column in table_spec.columns if column not in archived.columns]
    if missing:
        raise LocationError(f"{file.url}: not an archive of {table} (lacks columns: {', '.join(missing)})")
    try:
        both = pl.concat([archived.select(new.columns).cast(new.schema), new])
    except pl.exceptions.PolarsError as exc:
        raise LocationError(f"{file.url}: not an archive of {table} ({exc})") from None
    return both.unique(subset=list(table_spec.dedup_key), keep="last", maintain_order=True)


def _write(file: Location, frame: pl.DataFrame) -> None:
    """Write the day file whole or not at all: to a temporary name, then renamed into place."""
    file.filesystem.create_dir(file.path.rsplit("/", 1)[0], recursive=True)
    partial = f"{file.path}.partial"
    pq.write_table(frame.to_arrow(), partial, filesystem=file.filesystem, compression="zstd")
    if pq.read_metadata(partial, filesystem=file.filesystem).num_rows != frame.height:
        raise LocationError(f"{file.url}: the archived file does not hold the {frame.height} rows written")
    file.filesystem.move(partial, file.path)


def archive(store: EventStore, table: str, start: date, end: date, target: Location,
            delete: bool = False) -> dict[str, Any]:
    """Write each day in [start, end) with rows to Parquet, merged with that day's archived rows
    when it was archived before; with `delete`, then remove the day from the store, once the
    file read back holds every row."""
    written: dict[str, int] = {}
    for day in _stored_days(store, _checked(table), start, end):
        frame = store.select(table, start=day, end=day + DAY)
        if frame.height == 0:
            continue
        file = _day_file(target, table, day)
        archived = read_day(target, table, day)
        _write(file, frame if archived is None else _merged(table, archived, frame, file))
        if delete:
            store.replace_window(table, day, day + DAY, frame.clear())
        written[f"{day:%Y-%m-%d}"] = frame.height
    return {"table": table, "target": target.url, "days": written, "rows": sum(written.values()),
            "deleted": delete}


def read_day(source: Location, table: str, day: datetime) -> pl.DataFrame | None:
    """One archived day, or None when that day has no file."""
    file = _day_file(source, _checked(table), day)
    if source.filesystem.get_file_info(file.path).type == fs.FileType.NotFound:
        return None
    return _read(file)


def load(store: EventStore, table: str, start: date, end: date, source: Location) -> dict[str, Any]:
    """Put archived days back into the store; each day replaces what the store holds for it."""
    if not source.is_s3 and source.filesystem.get_file_info(source.path).type != fs.FileType.Directory:
        # A typo would otherwise load "0 rows" and succeed.
        raise LocationError(f"{source.url}: no archive folder there")
    loaded: dict[str, int] = {}
    for day in _archived_days(source, _checked(table), start, end):
        frame = read_day(source, table, day)
        if frame is not None:
            loaded[f"{day:%Y-%m-%d}"] = store.replace_window(table, day, day + DAY, frame)
    return {"table": table, "source": source.url, "days": loaded, "rows": sum(loaded.values())}
