"""Runs in Superset's own environment: set up its home, the admin, import the Qraft bundle, serve.

Started by `python -m qraft_core.superset` (`make superset`), which writes the bundle zip.
The admin user is QRAFT_SUPERSET_ADMIN (default admin) with the password in
QRAFT_SUPERSET_PASSWORD; the password is never printed nor passed on a command line.
"""

import argparse
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port(preferred: int) -> int:
    """`preferred` if it can be bound on loopback, else a free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SUPERSET = str(Path(sys.executable).parent / "superset")


def superset(*args: str) -> None:
    subprocess.run([SUPERSET, *args], check=True)


def ensure_admin(user: str, password: str) -> None:
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        manager = app.appbuilder.sm
        existing = manager.find_user(username=user)
        if existing is None:
            role = manager.find_role(manager.auth_role_admin)
            if not manager.add_user(user, "Qraft", "Admin", f"{user}@localhost", role, password):
                raise SystemExit(f"error: could not create the Superset admin {user!r}")
            print(f"created the Superset admin {user!r}")
        else:
            manager.reset_password(existing.id, password)
            print(f"updated the password of the Superset admin {user!r}")


def import_bundle(bundle: str, user: str) -> None:
    """Every object of the bundle, replacing what an earlier import left.

    `superset import-dashboards` overwrites the dashboard only: a changed dataset, chart or
    database (a store moved to a server) would keep its old definition. So each kind is
    imported with overwrite, dependencies first.
    """
    from zipfile import ZipFile

    import yaml
    from flask import g
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        # Superset's models can be imported only once its app exists.
        from superset.commands.chart.importers.v1 import ImportChartsCommand
        from superset.commands.dashboard.importers.v1 import ImportDashboardsCommand
        from superset.commands.database.importers.v1 import ImportDatabasesCommand
        from superset.commands.dataset.importers.v1 import ImportDatasetsCommand
        from superset.commands.importers.v1.utils import get_contents_from_bundle

        g.user = app.appbuilder.sm.find_user(username=user)
        with ZipFile(bundle) as archive:
            contents = get_contents_from_bundle(archive)
        # metadata.yaml names the kind an import command accepts.
        for command, kind in ((ImportDatabasesCommand, "Database"), (ImportDatasetsCommand, "SqlaTable"),
                              (ImportChartsCommand, "Slice"), (ImportDashboardsCommand, "Dashboard")):
            metadata = yaml.safe_dump({"version": "1.0.0", "type": kind})
            command({**contents, "metadata.yaml": metadata}, overwrite=True).run()
    print("imported the Qraft dashboards")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="Superset's home (metadata database, secret key)")
    parser.add_argument("--bundle", required=True, help="the import zip written by qraft_core.superset")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store-lock", default="", help="Qraft's store lock file (embedded store only)")
    args = parser.parse_args()
    user = os.environ.get("QRAFT_SUPERSET_ADMIN", "admin")
    password = os.environ.get("QRAFT_SUPERSET_PASSWORD", "")
    if not password:
        print("error: set QRAFT_SUPERSET_PASSWORD to the password of the Superset admin", file=sys.stderr)
        return 2
    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    secret = home / "secret_key"
    if not secret.exists():
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(42))
    os.environ.update(SUPERSET_HOME=str(home), QRAFT_SUPERSET_HOME=str(home), QRAFT_STORE_LOCK=args.store_lock,
                      SUPERSET_CONFIG_PATH=str(HERE / "superset_config.py"), FLASK_APP="superset.app:create_app()")
    superset("db", "upgrade")
    superset("init")
    ensure_admin(user, password)
    import_bundle(args.bundle, user)
    Path(args.bundle).unlink()
    port = free_port(args.port)
    print(f"Superset: http://127.0.0.1:{port}/superset/dashboard/qraft-overview/ (user {user})", flush=True)
    os.execv(SUPERSET, [SUPERSET, "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"])


if __name__ == "__main__":
    sys.exit(main())
