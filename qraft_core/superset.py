"""Superset over the store the config names: its connection string, the bundle and the launch.

`python -m qraft_core.superset` (what `make superset` runs) writes the bundle in
dashboards/superset as an import zip whose database is the configured store, then
hands over to dashboards/superset_env/launch.py, which runs inside Superset's own
locked environment (Superset's pins never touch Qraft's lock).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

import yaml

from qraft_core.config import ConfigError, load_qraft_config
from qraft_core.redact import redact
from qraft_core.store.sessions import lock_path_of

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "dashboards" / "superset"
SUPERSET_ENV = REPO / "dashboards" / "superset_env"
BUNDLE_DATABASE = "databases/qraft.yaml"
DEFAULT_PORT = 8088


def superset_uri(store_dsn: str) -> str:
    """The clickhouse-connect SQLAlchemy URI of a Qraft store DSN.

    >>> superset_uri("chdb:///srv/qraft data/clickhouse")
    'clickhousedb:///default?interface=chdb&path=/srv/qraft%20data/clickhouse'
    >>> superset_uri("https://qraft:s3cret@ch.example:8443/analytics")
    'clickhousedb://qraft:s3cret@ch.example:8443/analytics?secure=true'
    >>> superset_uri("http://ch:8123")
    'clickhousedb://ch:8123/default'
    """
    if store_dsn.startswith("chdb://"):
        path = store_dsn.removeprefix("chdb://")
        return f"clickhousedb:///default?interface=chdb&path={quote(path)}"
    parts = urlsplit(store_dsn)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"store DSN must start with chdb://, http:// or https:// (got {redact(store_dsn)!r})")
    database = parts.path.strip("/") or "default"
    secure = "?secure=true" if parts.scheme == "https" else ""
    return f"clickhousedb://{parts.netloc}/{database}{secure}"


def bundle_zip(uri: str, bundle: Path = BUNDLE) -> bytes:
    """The bundle as Superset imports it (root folder `superset/`), its database pointed at `uri`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle.rglob("*.yaml")):
            relative = PurePosixPath(path.relative_to(bundle).as_posix())
            text = path.read_text(encoding="utf-8")
            if str(relative) == BUNDLE_DATABASE:
                database = yaml.safe_load(text)
                database["sqlalchemy_uri"] = uri
                text = yaml.safe_dump(database, sort_keys=False)
            archive.writestr(str("superset" / relative), text)
    return buffer.getvalue()


def write_private(path: Path, data: bytes) -> None:
    """`data` at `path`, readable by its owner only (the zip may hold the store's password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def prepare(config_dir: str | None) -> dict[str, str]:
    """Writes the import zip under `<data_dir>/superset`; returns what the launcher needs."""
    config = load_qraft_config(config_dir)
    dsn = config.store_dsn
    uri = superset_uri(dsn)
    home = config.data_dir.resolve() / "superset"
    archive = home / "qraft_superset.zip"
    write_private(archive, bundle_zip(uri))
    return {
        "home": str(home),
        "bundle": str(archive),
        "uri": redact(uri),
        # chDB admits one process per directory: Superset takes Qraft's store lock per connection.
        "store_lock": lock_path_of(dsn) if dsn.startswith("chdb://") else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qraft_core.superset",
        description="Install the locked Superset, import the Qraft dashboards pointed at the configured "
                    "store and serve them. The admin is QRAFT_SUPERSET_ADMIN (default admin) with the "
                    "password in QRAFT_SUPERSET_PASSWORD.",
    )
    parser.add_argument("--config", help="configuration directory (default: $QRAFT_CONFIG_DIR or config)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("QRAFT_SUPERSET_PORT", DEFAULT_PORT)),
                        help="port to serve on; a free one when it is taken or 0 (default 8088, "
                             "$QRAFT_SUPERSET_PORT)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write the import zip and print what the launch would use, as JSON")
    args = parser.parse_args(argv)
    if not args.prepare_only and not os.environ.get("QRAFT_SUPERSET_PASSWORD"):
        print("error: set QRAFT_SUPERSET_PASSWORD to the password of the Superset admin", file=sys.stderr)
        return 2
    try:
        plan = prepare(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    if args.prepare_only:
        print(json.dumps(plan))
        return 0
    print(f"Superset database: {plan['uri']}", flush=True)
    # `uv run` names its own binary in $UV; Superset's environment is synced from its lock on first run.
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        print("error: uv is not on PATH; run this through `make superset`", file=sys.stderr)
        return 2
    command = [uv, "run", "--project", str(SUPERSET_ENV), "--frozen",
               "python", str(SUPERSET_ENV / "launch.py"), "--home", plan["home"], "--bundle", plan["bundle"],
               "--port", str(args.port), "--store-lock", plan["store_lock"]]
    # Qraft's own environment must not leak into Superset's (uv would warn and ignore it).
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    os.execve(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
