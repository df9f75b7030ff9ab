"""What the services need from the outside that qraft_core does not implement itself.

The pipeline runner materializes the partitioned assets (clean events → cards).
Deployments pass the Dagster implementation in from the entry points; unit
tests pass a fake that writes what they want to find.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from qraft_core.bus.base import Consumer, Publisher


@dataclass
class WindowRuns:
    """How materializing a window range went: runs started, the ids of those that failed, and the
    seconds each detector spent reading bars, summed over the runs (the runner's `detector_seconds`);
    the detectors that failed on some stream's window, how often, and the first error of each."""

    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    detector_seconds: dict[str, float] = field(default_factory=dict)
    detector_failures: dict[str, int] = field(default_factory=dict)
    detector_first_failure: dict[str, str] = field(default_factory=dict)


@dataclass
class PendingRuns:
    """What running every window due went to: run counts and windows materialized per asset."""

    succeeded: int = 0
    failed: int = 0
    windows_materialized: dict[str, int] = field(default_factory=dict)


class PipelineRunner(Protocol):
    def materialize(
        self, start: datetime, end: datetime, on_progress: Callable[[int], None]
    ) -> WindowRuns:
        """Recompute every asset over the windows [start, end), for every source (detector state
        spans them); stop at the first failed run, as later windows depend on its state.
        `on_progress` gets the number of windows each successful run completed."""
        ...

    def run_due(self, on_run: Callable[[str, bool], None]) -> PendingRuns:
        """Run every window that is due (closed and not yet materialized) until none is left;
        `on_run` gets each run's key and whether it succeeded."""
        ...


class Bus(Publisher, Consumer, Protocol):
    """What the pipeline service publishes to and lands from: NatsBus, or MemoryBus in unit tests."""

    async def subscribe(self, durable: str, ack_wait_s: float = 60.0) -> None: ...

    async def delete_consumer(self, durable: str) -> bool: ...
