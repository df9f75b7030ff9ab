"""`qraft backup` / `qraft restore`: ClickHouse through its own BACKUP and RESTORE, plus the
Dagster and MLflow stores: local SQLite files, or PostgreSQL databases through pg_dump.

A backup folder holds `clickhouse/` (ClickHouse's backup format), `files/` (the SQLite stores,
copied with SQLite's online backup so a running process does not tear them, and the
PostgreSQL dumps) and `manifest.json` with a digest of every table, which a restore checks.
and, given the bus, `nats/` with the JetStream stream's messages and configuration
(lifecycle/stream_backup.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from qraft_core.lifecycle.location import Location, LocationError
from qraft_core.lifecycle.stream_backup import backup_stream, restore_stream
from qraft_core.store import ClickHouseStore, StoreError
from qraft_core.store.sessions import connect_client
from qraft_core.store.table_spec import IDENTIFIER

MANIFEST = "manifest.json"
# A restore lands in this database first; the live tables are swapped only once all of it is read back.
SCRATCH_DATABASE = "qraft_restore"
# A local backup is written here (`DEST.partial`) and renamed to DEST once its manifest is written.
PARTIAL_SUFFIX = ".partial"


@contextmanager
def admin_client(store: ClickHouseStore, allowed_path: str | None) -> Iterator[Any]:
    """A client that may run BACKUP/RESTORE. The embedded engine needs the folder it may write
    to in its configuration, so it is opened for this alone, under the store's file lock."""
    if not store.embedded:
        client = connect_client(store.dsn)
        try:
            yield client
        finally:
            client.close()
        return
    options = {"backups.allowed_path": allowed_path} if allowed_path else None
    with FileLock(str(store.lock_path), timeout=store.lock_timeout_s):
        client = connect_client(store.dsn, chdb_options=options)
        try:
            yield client
        finally:
            client.close()


def table_digests(client: Any, database: str | None = None) -> dict[str, list[int]]:
    """[rows, sum of row hashes] per table of `database` (the current one by default): equal
    digests mean equal contents, in any order."""
    tables = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = {database:String} AND NOT is_temporary "
        "AND engine NOT IN ('Memory', 'View') ORDER BY name",
        parameters={"database": database or _current_database(client)}).result_rows]
    prefix = f"{database}." if database else ""
    digests = {}
    for table in tables:
        rows, total = client.query(
            f"SELECT count(), ifNull(sum(cityHash64(*)), 0) FROM {prefix}{table}").result_rows[0]
        digests[table] = [int(rows), int(total)]
    return digests


def _current_database(client: Any) -> str:
    return str(client.query("SELECT currentDatabase()").result_rows[0][0])


def _backup_engine(store: ClickHouseStore, target: Location) -> tuple[str, str | None]:
    """ClickHouse's backup destination for `target`, and the local folder it must be allowed."""
    if target.is_s3:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        return f"S3('{target.s3_url()}/clickhouse', '{key}', '{secret}')", None
    if store.embedded:
        return f"File('{target.path}/clickhouse')", target.path
    # A server writes to its own disk named `backups` (deploy/compose/clickhouse/backups.xml).
    return f"Disk('backups', '{Path(target.path).name}')", None


_CLICKHOUSE_ERROR = re.compile(r"Code: (?P<code>\d+)\. DB::Exception: (?P<text>.*?)\. \((?P<name>[A-Z_]+)\)", re.S)
_TABLE_NAMED = re.compile(r"table (?:`?\w+`?\.)?`?(?P<table>\w+)`?")


def short_error(message: str) -> str:
    """ClickHouse's error as its name and code and the table it names, not its multi-KB text.

    >>> short_error("Code: 246. DB::Exception: Bad size of file x: While restoring table `default`.`raw_events` "
    ...             "from backup File(y): while restoring ... (BAD_SIZE_OF_FILE_IN_DATA_PART) (version 24.1)")
    'BAD_SIZE_OF_FILE_IN_DATA_PART (code 246) at table raw_events'
    >>> short_error("connection refused")
    'connection refused'
    """
    found = _CLICKHOUSE_ERROR.search(message)
    if found is None:
        return message.strip().splitlines()[0][:300] if message.strip() else message
    table = _TABLE_NAMED.search(found["text"])
    where = f" at table {table['table']}" if table else ""
    return f"{found['name']} (code {found['code']}){where}"


def _run(client: Any, statement: str) -> None:
    try:
        client.query(statement)
    except Exception as exc:
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        message = str(exc).replace(secret, "***") if secret else str(exc)
        raise StoreError(f"ClickHouse could not run {statement.split('(')[0].strip()}: {short_error(message)}") from None


def _staging(store: ClickHouseStore, target: Location) -> Location:
    """Where the backup is written: `DEST.partial` for an embedded store's local folder, renamed
    to DEST at the end, so an interrupted backup never passes for one and never blocks the rerun.
    (A server writes its part to its own disk under DEST's name, and S3 has no rename.)"""
    if target.is_s3 or not store.embedded:
        return target
    info = target.filesystem.get_file_info(target.path)
    if info.type.name != "NotFound" and (info.type.name != "Directory" or any(Path(target.path).iterdir())):
        raise LocationError(f"{target.url}: already exists: choose a new folder for the backup")
    staging = Location(target.url + PARTIAL_SUFFIX, target.filesystem, target.path + PARTIAL_SUFFIX)
    if target.filesystem.get_file_info(staging.path).type.name == "Directory":
        target.filesystem.delete_dir(staging.path)  # left by an interrupted backup to the same folder
    return staging


def backup(store: ClickHouseStore, target: Location, files: dict[str, Path],
           databases: dict[str, str] | None = None, bus: tuple[str, str] | None = None) -> dict[str, Any]:
    """Back the store's database, the named local files, PostgreSQL databases (name: URL
    without a password; libpq reads PGPASSWORD) and the bus stream (NATS URL, stream name) up
    into `target`; returns the manifest."""
    staging = _staging(store, target)
    engine, allowed = _backup_engine(store, staging)
    if not staging.is_s3:
        staging.filesystem.create_dir(staging.path, recursive=True)
    with admin_client(store, allowed) as client:
        database = _current_database(client)
        digests = table_digests(client)
        _run(client, f"BACKUP DATABASE {database} TO {engine}")
    copied = {}
    for name, path in files.items():
        if path.exists():
            staging.child("files").write_bytes(name, _sqlite_snapshot(path))
            copied[name] = str(path)
    for name, url in (databases or {}).items():
        staging.child("files").write_bytes(f"{name}.pgdump", _postgres("pg_dump", url, "--format=custom"))
    stream = backup_stream(*bus, staging) if bus else None
    manifest = {"created_at": datetime.now(UTC).isoformat(), "database": database,
                "tables": digests, "files": copied, "databases": sorted(databases or {}), "stream": stream}
    staging.write_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    if staging != target:
        os.replace(staging.path, target.path)
    return manifest


def _is_digest(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(n) is int for n in value)


def read_manifest(source: Location) -> dict[str, Any]:
    """The backup's manifest, checked before anything is restored from it (`files`, `databases`
    and `stream` may be missing: backups made before they were backed up)."""
    url = source.child(MANIFEST).url
    try:
        manifest = json.loads(source.read_bytes(MANIFEST))
    except ValueError as exc:
        raise LocationError(f"{url}: not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise LocationError(f"{url}: expected a JSON object (got {type(manifest).__name__})")
    manifest = {"files": {}, "databases": [], "stream": None, **manifest}
    checks = {
        "database": (isinstance(manifest.get("database"), str) and IDENTIFIER.match(manifest["database"]),
                     "a database name"),
        "tables": (isinstance(manifest.get("tables"), dict) and all(
            isinstance(t, str) and IDENTIFIER.match(t) and _is_digest(d) for t, d in manifest["tables"].items()),
                   "an object of table name: [rows, digest]"),
        "files": (isinstance(manifest["files"], dict) and all(isinstance(f, str) for f in manifest["files"]),
                  "an object of file name: path"),
        "databases": (isinstance(manifest["databases"], list) and all(isinstance(d, str) for d in manifest["databases"]),
                      "a list of database names"),
        "stream": (manifest["stream"] is None or (isinstance(manifest["stream"], dict) and {
            "name", "messages", "digest"} <= manifest["stream"].keys()), "null or the stream's name, messages, digest"),
    }
    for key, (valid, expected) in checks.items():
        if not valid:
            found = "missing" if key not in manifest else f"got {json.dumps(manifest[key])[:60]}"
            raise LocationError(f"{url}: {key}: expected {expected} ({found})")
    return manifest


def _restore_tables(client: Any, database: str, manifest: dict[str, Any], engine: str) -> None:
    """RESTORE the backup into a scratch database and check its digests, then swap its tables
    for the live ones: a damaged backup leaves the live tables as they were."""
    client.command(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} SYNC")
    try:
        # The backed-up database's definition (its engine) need not match the scratch one's.
        _run(client, f"RESTORE DATABASE {manifest['database']} AS {SCRATCH_DATABASE} FROM {engine} "
                     "SETTINGS allow_different_database_def = 1")
        restored = table_digests(client, SCRATCH_DATABASE)
        mismatched = sorted(t for t, d in manifest["tables"].items() if restored.get(t) != d)
        if mismatched:
            raise LocationError(f"the backup's tables differ from its manifest: {', '.join(mismatched)}; "
                                "the current tables are left as they were")
        live = table_digests(client, database)
        for table in restored:
            if table not in live:  # chDB cannot RENAME between its database engines; an EXCHANGE it can
                client.command(f"CREATE TABLE {database}.{table} AS {SCRATCH_DATABASE}.{table}")
            client.command(f"EXCHANGE TABLES {database}.{table} AND {SCRATCH_DATABASE}.{table}")
        for table in set(live) - set(restored):  # made after the backup: the database is replaced whole
            client.command(f"DROP TABLE IF EXISTS {database}.{table} SYNC")
    finally:
        client.command(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} SYNC")


def restore(store: ClickHouseStore, source: Location, files: dict[str, Path],
            databases: dict[str, str] | None = None, bus_url: str | None = None) -> dict[str, Any]:
    """Replace the store's tables (the named local files, PostgreSQL databases and, given its URL,
    the bus stream) with the backup in `source`.

    Returns the manifest with `verified`: the restored tables' and stream's digests equal the
    backed-up ones.
    """
    manifest = read_manifest(source)
    engine, allowed = _backup_engine(store, source)
    with admin_client(store, allowed) as client:
        _restore_tables(client, _current_database(client), manifest, engine)
    for name in manifest["files"]:
        if name in files:
            _replace_file(files[name], source.child("files").read_bytes(name))
    for name in manifest["databases"]:
        if name in (databases or {}):
            dump = source.child("files").read_bytes(f"{name}.pgdump")
            _postgres("pg_restore", (databases or {})[name], "--clean", "--if-exists", "--no-owner", data=dump)
    if bus_url and manifest["stream"]:
        restore_stream(bus_url, source, manifest["stream"])
    return {**manifest, "verified": True}


def _postgres(tool: str, url: str, *args: str, data: bytes | None = None) -> bytes:
    """Run pg_dump or pg_restore on the database at `url` (a SQLAlchemy driver suffix is dropped)."""
    if shutil.which(tool) is None:
        raise LocationError(f"{tool} is not installed: install the PostgreSQL client tools")
    scheme, _, rest = url.partition("://")
    result = subprocess.run([tool, *args, f"--dbname={scheme.split('+')[0]}://{rest}"], input=data,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise LocationError(f"{tool} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _sqlite_snapshot(path: Path) -> bytes:
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / "copy.db"
        with sqlite3.connect(path) as live, sqlite3.connect(copy) as out:
            live.backup(out)
        return copy.read_bytes()


def _replace_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".restoring")
    temporary.write_bytes(data)
    os.replace(temporary, path)
