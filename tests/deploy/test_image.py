"""The container image's recipe (no Docker here to build it): what it copies exists, the dependency
groups it installs exist, and its entrypoint, run here as a plain script, writes the Dagster
instance from the settings before running the command, or stops on a bad setting."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from .conftest import DEPLOY

REPO = DEPLOY.parent
DOCKERFILE = (DEPLOY / "docker" / "Dockerfile").read_text()
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"


def test_everything_the_image_copies_exists_and_its_groups_are_in_the_lock():
    sources = [part for line in DOCKERFILE.splitlines() if line.startswith("COPY ")
               for part in line.split()[1:-1]]
    assert sources and [s for s in sources if not (REPO / s).exists()] == []
    groups = set(re.findall(r"--group (\w+)", DOCKERFILE))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    assert groups == {"k8s"} and groups <= set(declared)
    assert "dagster-k8s" in (REPO / "uv.lock").read_text()


def _entrypoint(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "QRAFT_CONFIG_DIR": str(REPO / "config"), "QRAFT_DATA_DIR": str(tmp_path), **settings}
    command = [sys.executable, "-c", "import os; print(os.environ['DAGSTER_HOME'])"]
    return subprocess.run(["sh", str(ENTRYPOINT), *command], env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_entrypoint_writes_the_instance_then_runs_the_command(tmp_path):
    ran = _entrypoint(tmp_path, QRAFT_DAGSTER_STORAGE="postgresql://qraft@postgres:5432/dagster")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(tmp_path.resolve() / "dagster")
    written = yaml.safe_load((tmp_path / "dagster" / "dagster.yaml").read_text())
    assert written["storage"]["postgres"]["postgres_db"]["hostname"] == "postgres"


def test_the_entrypoint_stops_on_a_bad_setting_before_the_command(tmp_path):
    ran = _entrypoint(tmp_path, QRAFT_DAGSTER_RUN_LAUNCHER="kubernetes")
    assert ran.returncode == 2 and ran.stdout == ""
    assert "dagster.run_launcher: Input should be 'default' or 'k8s' (got 'kubernetes')" in ran.stderr
