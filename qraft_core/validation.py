"""`qraft config validate`: every configuration file checked by the module that uses it."""

from __future__ import annotations

from pathlib import Path

from qraft_core.config import config_dir, load_qraft_config, load_sources
from qraft_core.detectors.config import load_detectors
from qraft_core.explain.templates import load_cards_config
from qraft_core.operators.pipeline import load_preprocessing


def validate_all(directory: Path | str | None = None) -> list[str]:
    """Check every configuration file; returns the files checked, raises ConfigError on the first bad one."""
    base = config_dir(directory)
    checks = (("qraft.yaml", load_qraft_config), ("sources.yaml", load_sources),
              ("preprocessing.yaml", load_preprocessing), ("detectors.yaml", load_detectors),
              ("cards.yaml", load_cards_config))
    checked = []
    for name, load in checks:
        load(base)
        checked.append(str(base / name))
    return checked
