"""Run by init.sh in the Superset image: point the Qraft bundle's database at the stack's ClickHouse
(`bundle DATABASE_YAML`, from $CLICKHOUSE_URI), create the admin or set its password (`admin`,
from $SUPERSET_ADMIN_PASSWORD) and import the bundle over what an earlier start imported (`import ZIP`). The values are read from the environment, never from a command line
or a shell substitution, so any character of a password is kept and none is shown by `ps`."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

_URI_LINE = re.compile(r"^sqlalchemy_uri:.*$", re.MULTILINE)


def point_bundle_at(database_yaml: Path, uri: str) -> None:
    # A JSON string is a YAML double-quoted scalar: `&`, `|`, `#`, `: ` and quotes stay as they are.
    text, count = _URI_LINE.subn(lambda _: f"sqlalchemy_uri: {json.dumps(uri)}", database_yaml.read_text())
    if count != 1:
        raise SystemExit(f"error: {database_yaml}: expected one sqlalchemy_uri line, found {count}")
    database_yaml.write_text(text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["bundle"] and len(argv) == 2:
        point_bundle_at(Path(argv[1]), os.environ["CLICKHOUSE_URI"])
    elif argv == ["admin"]:
        # dashboards/superset_env/launch.py, copied next to this file: the same set-up as `make superset`.
        from launch import ensure_admin

        ensure_admin("admin", os.environ["SUPERSET_ADMIN_PASSWORD"])
    elif argv[:1] == ["import"] and len(argv) == 2:
        # Every object replaced, the database too: a changed ClickHouse password reaches Superset on restart
        # (`superset import-dashboards` would overwrite the dashboard only).
        from launch import import_bundle

        import_bundle(argv[1], "admin")
    else:
        print("usage: qraft_setup.py bundle DATABASE_YAML | admin | import ZIP", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
