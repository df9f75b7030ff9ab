"""The Superset image's setup: the bundle's database points at the stack's ClickHouse whatever
characters its password holds, and no password reaches a command line."""

import importlib.util
import shutil

import pytest
import yaml

from .conftest import DEPLOY, REPO

SUPERSET = DEPLOY / "superset"


def setup_module_of_the_image():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("qraft_setup", SUPERSET / "qraft_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("password", ["p&ss", "p|x", "a\\1b", "c#d: e\"f'g", "Zm9v%2FYmFy%2BYQ%3D%3D"])
def test_the_bundle_points_at_the_uri_whatever_its_password(tmp_path, password):
    database = tmp_path / "qraft.yaml"
    shutil.copy(REPO / "dashboards" / "superset" / "databases" / "qraft.yaml", database)
    before = yaml.safe_load(database.read_text())
    uri = f"clickhousedb://qraft:{password}@clickhouse:8123/default"
    setup_module_of_the_image().point_bundle_at(database, uri)
    after = yaml.safe_load(database.read_text())
    assert after == {**before, "sqlalchemy_uri": uri}


def test_no_password_is_passed_on_a_command_line():
    init = (SUPERSET / "init.sh").read_text()
    assert "PASSWORD" not in init and "$CLICKHOUSE_URI" not in init
    assert "sed " not in init


def test_drivers_are_installed_into_the_venv_superset_runs_from():
    dockerfile = (SUPERSET / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "install" in line]
    assert installs and all(". /app/.venv/bin/activate && uv pip install" in line for line in installs)
