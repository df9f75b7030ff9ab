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

MANIFEST = "manifest.json"


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


def table_digests(client: Any) -> dict[str, list[int]]:
    """[rows, sum of row hashes] per table: equal digests mean equal contents, in any order."""
    tables = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND NOT is_temporary "
        "AND engine NOT IN ('Memory', 'View') ORDER BY name").result_rows]
    digests = {}
    for table in tables:
        rows, total = client.query(f"SELECT count(), ifNull(sum(cityHash64(*)), 0) FROM {table}").result_rows[0]
        digests[table] = [int(rows), int(total)]
    return digests


def _backup_engine(store: ClickHouseStore, target: Location) -> tuple[str, str | None]:
    """ClickHouse's backup destination for `target`, and the local folder it must be allowed."""
    if target.is_s3:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        return f"S3('{target.s3_url()}/clickhouse', '{key}', '{secret}')", None
    if store.embedded:
        return f"File('{target.path}/clickhouse')", target.path
    # A server writes to its own disk named `backups` (deploy/compose/clickhouse/backups.xml).
    return f"Disk('backups', '{Path(target.path).name}')", None


def _run(client: Any, statement: str) -> None:
    try:
        client.query(statement)
    except Exception as exc:
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        message = str(exc).replace(secret, "***") if secret else str(exc)
        raise StoreError(f"ClickHouse could not run {statement.split('(')[0].strip()}: {message}") from None


def backup(store: ClickHouseStore, target: Location, files: dict[str, Path],
           databases: dict[str, str] | None = None, bus: tuple[str, str] | None = None) -> dict[str, Any]:
    """Back the store's database, the named local files, PostgreSQL databases (name: URL
    without a password; libpq reads PGPASSWORD) and the bus stream (NATS URL, stream name) up
    into `target`; returns the manifest."""
    engine, allowed = _backup_engine(store, target)
    if not target.is_s3:
        target.filesystem.create_dir(target.path, recursive=True)
    with admin_client(store, allowed) as client:
        database = client.query("SELECT currentDatabase()").result_rows[0][0]
        digests = table_digests(client)
        _run(client, f"BACKUP DATABASE {database} TO {engine}")
    copied = {}
    for name, path in files.items():
        if path.exists():
            target.child("files").write_bytes(name, _sqlite_snapshot(path))
            copied[name] = str(path)
    for name, url in (databases or {}).items():
        target.child("files").write_bytes(f"{name}.pgdump", _postgres("pg_dump", url, "--format=custom"))
    stream = backup_stream(*bus, target) if bus else None
    manifest = {"created_at": datetime.now(UTC).isoformat(), "database": database,
                "tables": digests, "files": copied, "databases": sorted(databases or {}), "stream": stream}
    target.write_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def restore(store: ClickHouseStore, source: Location, files: dict[str, Path],
            databases: dict[str, str] | None = None, bus_url: str | None = None) -> dict[str, Any]:
    """Replace the store's tables (the named local files, PostgreSQL databases and, given its URL,
    the bus stream) with the backup in `source`.

    Returns the manifest with `verified`: the restored tables' and stream's digests equal the
    backed-up ones.
    """
    manifest = json.loads(source.read_bytes(MANIFEST))
    engine, allowed = _backup_engine(store, source)
    with admin_client(store, allowed) as client:
        database = client.query("SELECT currentDatabase()").result_rows[0][0]
        for table in table_digests(client):
            client.command(f"DROP TABLE IF EXISTS {table} SYNC")
        _run(client, f"RESTORE DATABASE {manifest['database']} AS {database} FROM {engine}")
        restored = table_digests(client)
    for name in manifest["files"]:
        if name in files:
            _replace_file(files[name], source.child("files").read_bytes(name))
    for name in manifest.get("databases", []):
        if name in (databases or {}):
            dump = source.child("files").read_bytes(f"{name}.pgdump")
            _postgres("pg_restore", (databases or {})[name], "--clean", "--if-exists", "--no-owner", data=dump)
    if bus_url and manifest.get("stream"):
        restore_stream(bus_url, source, manifest["stream"])
    mismatched = sorted(t for t, d in manifest["tables"].items() if restored.get(t) != d)
    if mismatched:
        raise LocationError(f"restored tables differ from the backup: {', '.join(mismatched)}")
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
