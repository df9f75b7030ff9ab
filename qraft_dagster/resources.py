"""Where Dagster gets Qraft's real services: one resource built from the config directory.

A process keeps one `Runtime` per config directory (and set of `QRAFT_*` overrides): YAML is
read and the store opened and migrated once, not on every asset call and sensor tick. Edits to
the configuration files therefore apply to the next process: every run the daemon launches is a
new process, so to its next run; the sensor runs in the code server, so after a reload of the
code location (or `qraft up` restarted).
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource

from qraft_core.config import ENV_PREFIX, ConfigError, QraftConfig, load_qraft_config
from qraft_core.runtime import Runtime
from qraft_core.store import ClickHouseStore
from qraft_core.store.fake import MemoryStore

_runtimes: dict[tuple[Path, tuple[tuple[str, str], ...]], Runtime] = {}
_loading = threading.Lock()


class PipelineRuntime(Runtime):
    """A Runtime whose store stays open between the steps of a run (each step is a store session)."""

    @cached_property
    def store(self) -> ClickHouseStore:
        return super().store.keep_open_between_steps()


def _key(directory: Path | str) -> tuple[Path, tuple[tuple[str, str], ...]]:
    """A config directory with the QRAFT_* overrides in effect: a command that changes them in-process
    (e.g. another data directory) gets a Runtime of its own, never a stale one."""
    overrides = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    return Path(directory).resolve(), overrides


def require_qraft_yaml(directory: Path | str) -> Path:
    """The configuration file the code location is built from; its absence is an error, never the defaults
    (the default partitions are one fixed day, which would silently hide every other window)."""
    path = Path(directory) / "qraft.yaml"
    if not path.is_file():
        raise ConfigError(f"{path.resolve()}: file not found (Dagster's partitions, store and sensor are "
                          "configured there; set QRAFT_CONFIG_DIR to the folder holding it)")
    return path


def shared_runtime(directory: Path | str) -> Runtime:
    """This process's Runtime for a config directory, loaded on first use."""
    key = _key(directory)
    with _loading:
        if key not in _runtimes:
            require_qraft_yaml(key[0])
            _runtimes[key] = PipelineRuntime(config=load_qraft_config(key[0]), config_path=key[0])
        return _runtimes[key]


def share_config(directory: Path | str, config: QraftConfig) -> None:
    """Make `config` (already loaded by a command) the one the resource of `directory` uses in this process."""
    key = _key(directory)
    with _loading:
        if key not in _runtimes or _runtimes[key].config is not config:
            _runtimes[key] = PipelineRuntime(config=config, config_path=key[0])


class QraftResource(ConfigurableResource):  # type: ignore[misc]
    """Configuration, store and settings for assets and sensors."""

    config_dir: str = "config"

    @property
    def runtime(self) -> Runtime:
        return shared_runtime(self.config_dir)


class MemoryRuntime(Runtime):
    """A Runtime whose store is in memory: the pipeline without chDB, for Dagster-level tests."""

    def __init__(self, directory: Path | str) -> None:
        super().__init__(config=load_qraft_config(directory), config_path=Path(directory))
        self.memory = MemoryStore()

    @property  # type: ignore[override]
    def store(self) -> MemoryStore:  # type: ignore[override]
        return self.memory


class MemoryQraftResource(QraftResource):  # type: ignore[misc]
    """The fake resource: same configuration, an in-memory store (one per config directory per process)."""

    @property
    def runtime(self) -> Runtime:
        key = _key(self.config_dir)
        with _loading:
            if not isinstance(_runtimes.get(key), MemoryRuntime):
                _runtimes[key] = MemoryRuntime(key[0])
            return _runtimes[key]
