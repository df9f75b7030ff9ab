"""The composition root: Qraft's services wired to real adapters, or to the ones passed in.

Entry points (the `qraft` command, the API, the replay worker) call `bootstrap`
once per process and pass in what only they know: the pipeline runner (the
Dagster one lives in the Dagster package, which this one never imports) and
the command that starts a background replay worker. Tests pass fakes (the in-memory store, a fake runner,
a disabled tracker). The store is opened and migrated once, on first use, and
shared by every service.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Protocol

from qraft_core.config import ConfigError, QraftConfig
from qraft_core.explain.llm import LlmClient
from qraft_core.replays import ReplayRegistry, SubprocessReplayLauncher
from qraft_core.runtime import Runtime
from qraft_core.services.patterns import PatternService
from qraft_core.services.pipeline import PipelineService
from qraft_core.services.ports import Bus, PipelineRunner
from qraft_core.services.replay import ReplayService
from qraft_core.services.sources import SourceService
from qraft_core.store.base import EventStore
from qraft_core.tracking import Tracker


class RuntimeLike(Protocol):
    """What the store-backed services need of a runtime: configuration, its folder, data and store."""

    @property
    def config(self) -> QraftConfig: ...

    @property
    def config_path(self) -> Path: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def store(self) -> EventStore: ...


class Services:
    """Each service is built on first use: a command that needs no store does not open one."""

    def __init__(self, rt: RuntimeLike, tracker: Tracker | None, llm: LlmClient | None,
                 runner: PipelineRunner | None, replay_worker: list[str] | None, bus: Bus | None = None) -> None:
        self.runtime = rt
        self.runner = runner
        self.bus = bus
        self._tracker = tracker
        self._llm = llm
        self._replay_worker = replay_worker

    @property
    def store(self) -> EventStore:
        return self.runtime.store

    @cached_property
    def replay_registry(self) -> ReplayRegistry:
        return ReplayRegistry(self.runtime.data_dir / "replays")

    @cached_property
    def replays(self) -> ReplayService:
        rt = self.runtime
        return ReplayService(rt.config, rt.config_path, self.store, self.replay_registry,
                             self._tracker or Tracker.from_config(rt.config), self.pipeline)

    @cached_property
    def replay_launcher(self) -> SubprocessReplayLauncher | None:
        """Starts replays in background worker processes; None without a worker command."""
        if self._replay_worker is None:
            return None
        rt = self.runtime
        return SubprocessReplayLauncher(self.replay_registry, rt.config_path.resolve(), rt.config.partitions,
                                        self._replay_worker)

    @cached_property
    def pipeline(self) -> PipelineService:
        """Needs a full runtime: it starts the bus and the embedded NATS server."""
        if not isinstance(self.runtime, Runtime):
            raise ConfigError("pipeline: runs need a runtime loaded from a configuration folder")
        return PipelineService(self.runtime, self.runner, self.bus)

    @cached_property
    def patterns(self) -> PatternService:
        return PatternService(self.store, self.runtime.config, self.runtime.config_path, self._llm)

    @cached_property
    def sources(self) -> SourceService:
        return SourceService(self.runtime.config_path, self.store)


def bootstrap(
    config: RuntimeLike | Path | str | None = None,
    *,
    store: EventStore | None = None,
    bus: Bus | None = None,
    tracker: Tracker | None = None,
    llm: LlmClient | None = None,
    runner: PipelineRunner | None = None,
    replay_worker: list[str] | None = None,
) -> Services:
    """The services over `config` (a runtime, or the configuration folder to load one from; the API
    passes its own runtime, which serves every service but the pipeline and replays).

    `store`, `bus`, `tracker` and `llm` replace the configured ones (an injected bus is used as
    given and never closed here); without `runner` nothing can
    materialize windows in this process; `replay_worker` is the command of the entry point that
    runs a claimed replay in the background (`--config-dir DIR replay ID` is appended).
    """
    rt = Runtime.load(config) if config is None or isinstance(config, Path | str) else config
    if store is not None:
        # Fills the runtime's cached store, so the lander and every service share the injected one.
        rt.__dict__["store"] = store
    return Services(rt, tracker, llm, runner, replay_worker, bus)
