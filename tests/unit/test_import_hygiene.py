"""Configuration sits below every layer that reads it: importing it pulls in none of them."""

import ast
import subprocess
import sys
from pathlib import Path

import qraft_core.config


def test_importing_config_imports_no_adapter_detector_operator_or_explain_module():
    # A fresh interpreter: this test process has long imported everything.
    listing = subprocess.run(
        [sys.executable, "-c", "import sys, qraft_core.config; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert sorted(m for m in listing if m.startswith("qraft")) == [
        "qraft_core", "qraft_core.config", "qraft_core.events", "qraft_core.plugins", "qraft_core.redact",
        "qraft_core.registry", "qraft_core.timeutil",
    ]


def test_config_has_no_function_level_imports():
    """No import inside a function of the configuration module dodges a cycle."""
    tree = ast.parse(Path(qraft_core.config.__file__).read_text())
    nested = [
        (function.name, node.lineno)
        for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert nested == []
