#!/bin/sh
# Writes the Dagster instance settings (dagster.yaml) from qraft.yaml and QRAFT_* variables,
# then runs the container's command. A bad setting stops here with the file, key and expectation.
set -eu
DAGSTER_HOME="$(python -m qraft_dagster.instance)"
export DAGSTER_HOME
exec "$@"
