"""`qraft backup`, `qraft restore`, `qraft archive`, `qraft compact-state`: the data lifecycle."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from qraft_cli import emit, main, runtime
from qraft_core.bus.base import BusError
from qraft_core.lifecycle.location import LocationError, location


def _local_stores(rt: Any) -> dict[str, Path]:
    """The SQLite files of Dagster and MLflow, when they are local (a server has its own backups)."""
    files: dict[str, Path] = {}
    if rt.config.dagster.storage == "sqlite":
        home = rt.config.dagster_home
        files |= {f"dagster/{p.relative_to(home)}": p for p in sorted(home.rglob("*.db"))}
    if not rt.config.mlflow.tracking_uri:
        files["mlflow/mlflow.db"] = rt.data_dir / "mlflow.db"
    return files


def _postgres_stores(rt: Any) -> dict[str, str]:
    """Dagster's database when it is on PostgreSQL (dumped with pg_dump)."""
    storage = rt.config.dagster.storage
    return {} if storage == "sqlite" else {"dagster": storage}


def _bus(rt: Any, with_stream: bool) -> str | None:
    """The NATS URL of the bus to back up or restore (the embedded server is started if needed)."""
    return rt.nats_url() if with_stream else None


_NO_STREAM = click.option("--no-stream", is_flag=True,
                          help="Leave the JetStream stream out (for example when NATS has its own backups).")


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    raise SystemExit(2)


@main.command("backup")
@click.argument("destination")
@_NO_STREAM
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def backup_command(ctx: click.Context, destination: str, no_stream: bool, as_json: bool) -> None:
    """Back up ClickHouse (BACKUP DATABASE), the local Dagster and MLflow stores, Dagster's
    PostgreSQL database (pg_dump) and the JetStream stream (every message with its id) to
    DESTINATION, a new local folder or s3://bucket/prefix (credentials and endpoint from AWS_*
    variables)."""
    from qraft_core.lifecycle.backup import backup

    rt = runtime(ctx)
    url = _bus(rt, not no_stream)
    try:
        manifest = backup(rt.store, location(destination), _local_stores(rt), _postgres_stores(rt),
                          (url, rt.config.nats.stream) if url else None)
    except (LocationError, OSError, BusError) as exc:
        _fail(exc)
    stream = manifest["stream"]
    emit(manifest, as_json, f"backed up {len(manifest['tables'])} tables, {len(manifest['files'])} files, "
                            f"{len(manifest['databases'])} PostgreSQL databases and "
                            f"{stream['messages'] if stream else 'no'} stream messages to {destination}")


@main.command("restore")
@click.argument("source")
@click.option("--yes", is_flag=True, help="Confirm: the current tables, stores and stream are replaced.")
@_NO_STREAM
@click.option("--json", "as_json", is_flag=True, help="Print the verified manifest as JSON.")
@click.pass_context
def restore_command(ctx: click.Context, source: str, yes: bool, no_stream: bool, as_json: bool) -> None:
    """Replace ClickHouse's tables, the local Dagster and MLflow stores and the JetStream stream
    (re-created with its configuration, never with fewer replicas, and re-published with its
    message ids) with the backup in SOURCE, then check every table's and the stream's digest
    against the backup. Stop Qraft's processes first; `qraft bus reset` then re-lands the stream."""
    from qraft_core.lifecycle.backup import restore

    if not yes:
        _fail(ValueError("restore replaces the current data: run it again with --yes"))
    rt = runtime(ctx)
    try:
        manifest = restore(rt.store, location(source), _local_stores(rt), _postgres_stores(rt),
                           _bus(rt, not no_stream))
    except (LocationError, OSError, BusError) as exc:
        _fail(exc)
    emit(manifest, as_json, f"restored {len(manifest['tables'])} tables from {source}; digests verified")


@main.group("archive")
def archive_group() -> None:
    """The cold archive: whole days of raw or clean events as Parquet (local folder or S3)."""


def _day(_ctx: click.Context, _param: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a day as YYYY-MM-DD (got {value!r})") from None


_TABLE = click.argument("table", type=click.Choice(["raw_events", "clean_events"]))
_START = click.option("--start", required=True, callback=_day, help="First day (YYYY-MM-DD).")
_END = click.option("--end", required=True, callback=_day, help="Day after the last (YYYY-MM-DD).")


@archive_group.command("export")
@_TABLE
@_START
@_END
@click.option("--to", "destination", required=True, help="Local folder or s3://bucket/prefix.")
@click.option("--delete", is_flag=True, help="Remove each day from ClickHouse once its file is written and checked.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def archive_export(ctx: click.Context, table: str, start: date, end: date, destination: str,
                   delete: bool, as_json: bool) -> None:
    """Write the days [START, END) of TABLE to Parquet files under DESTINATION."""
    from qraft_core.lifecycle.archive import archive

    try:
        summary = archive(runtime(ctx).store, table, start, end, location(destination), delete)
    except (LocationError, OSError) as exc:
        _fail(exc)
    emit(summary, as_json, f"archived {summary['rows']} rows of {table} ({len(summary['days'])} days) "
                           f"to {destination}{'; removed from ClickHouse' if delete else ''}")


@archive_group.command("load")
@_TABLE
@_START
@_END
@click.option("--from", "source", required=True, help="Local folder or s3://bucket/prefix.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def archive_load(ctx: click.Context, table: str, start: date, end: date, source: str, as_json: bool) -> None:
    """Put the archived days [START, END) of TABLE back into ClickHouse (then `qraft replay` them)."""
    from qraft_core.lifecycle.archive import load

    try:
        summary = load(runtime(ctx).store, table, start, end, location(source))
    except (LocationError, OSError) as exc:
        _fail(exc)
    emit(summary, as_json, f"loaded {summary['rows']} rows of {table} ({len(summary['days'])} days) from {source}")


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """The same reading of a time as `qraft replay`, `qraft patterns` and the API."""
    from qraft_core.explain.catalog import QueryError, parse_time

    try:
        return None if value is None else parse_time(value, f"--{param.name}")
    except QueryError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], ctx, param) from None


@main.command("compact-state")
@click.option("--every", type=click.IntRange(min=1), required=True, help="Keep the state of every N-th window.")
@click.option("--before", callback=_time, default=None,
              help="Only compact windows before this time (ISO 8601, naive means UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def compact_state(ctx: click.Context, every: int, before: datetime | None, as_json: bool) -> None:
    """Delete stored detector states except every N-th window and the newest; replays then start
    at a kept window."""
    from qraft_core.lifecycle.compaction import compact_detector_state

    rt = runtime(ctx)
    partitions = rt.config.partitions
    counts = compact_detector_state(rt.store, every, partitions.interval, partitions.start, before)
    emit(counts, as_json, f"detector state: kept {counts['kept']} windows, deleted {counts['deleted']}")
