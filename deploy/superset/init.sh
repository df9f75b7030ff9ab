#!/bin/sh
# Prepares Superset's metadata database, the admin user and the Qraft bundle (dashboards/superset,
# pointed at the stack's ClickHouse), then serves. Every step is idempotent, so restarts are safe.
set -eu
superset db upgrade
superset fab create-admin --username admin --firstname Qraft --lastname Admin \
  --email admin@localhost --password "$SUPERSET_ADMIN_PASSWORD" || true
superset init
work=$(mktemp -d)
cp -r /app/qraft-bundle "$work/qraft"
sed -i "s|^sqlalchemy_uri:.*|sqlalchemy_uri: $CLICKHOUSE_URI|" "$work/qraft/databases/qraft.yaml"
(cd "$work" && python -c "import shutil; shutil.make_archive('qraft', 'zip', '.', 'qraft')")
superset import-dashboards --path "$work/qraft.zip" --username admin
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
