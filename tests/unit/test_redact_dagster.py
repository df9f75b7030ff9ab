"""Dagster's processes (code server, run workers, `dagster dev`) load the code location, not the CLI:
loading it masks secrets in their log lines too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging
from qraft_dagster.definitions import defs
defs.load_fn()
logging.basicConfig()
logging.getLogger("mlflow").warning("API request to %s failed", "http://alice:S3cretPassw0rd@mlflow:5000/api")
"""


def test_loading_the_code_location_redacts_every_log_line(tmp_path: Path) -> None:
    environment = {**os.environ, "QRAFT_CONFIG_DIR": str(REPO / "config"), "QRAFT_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment,
                            cwd=tmp_path, timeout=120, check=True)
    assert "http://alice:***@mlflow:5000/api" in result.stderr
    assert "S3cretPassw0rd" not in result.stderr
