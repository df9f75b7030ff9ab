#!/bin/sh
# Prepares Superset's metadata database, the admin user and the Qraft bundle (dashboards/superset,
# pointed at the stack's ClickHouse), then serves. Every step is idempotent, so restarts are safe.
# Passwords stay in the environment: qraft_setup.py reads them (no command line, no sed).
set -eu
setup=/app/qraft-superset/qraft_setup.py
superset db upgrade
superset init
python "$setup" admin
work=$(mktemp -d)
cp -r /app/qraft-bundle "$work/qraft"
python "$setup" bundle "$work/qraft/databases/qraft.yaml"
(cd "$work" && python -c "import shutil; shutil.make_archive('qraft', 'zip', '.', 'qraft')")
python "$setup" import "$work/qraft.zip"
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
