"""A pipeline runner for unit tests: writes what a test scripts instead of running Dagster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from qraft_core.services.ports import PendingRuns, WindowRuns


@dataclass
class FakePipelineRunner:
    """Calls `produce(start, end)` for each materialized range (a test writes rows there);
    `fail` makes every run fail; `detector_seconds` and `detector_failures` (with their first errors) are
    what a successful range reports.
    The ranges asked for are kept in `materialized`."""

    windows_per_run: int = 1
    interval_s: float = 60.0
    produce: Callable[[datetime, datetime], None] = lambda start, end: None
    fail: bool = False
    detector_seconds: dict[str, float] = field(default_factory=dict)
    detector_failures: dict[str, int] = field(default_factory=dict)
    detector_first_failure: dict[str, str] = field(default_factory=dict)
    materialized: list[tuple[datetime, datetime]] = field(default_factory=list)

    def materialize(
        self, start: datetime, end: datetime, on_progress: Callable[[int], None]
    ) -> WindowRuns:
        self.materialized.append((start, end))
        if self.fail:
            return WindowRuns(runs=1, failed_runs=["fake-run-1"])
        self.produce(start, end)
        windows = int((end - start).total_seconds() / self.interval_s)
        runs = -(-windows // self.windows_per_run)
        on_progress(windows)
        return WindowRuns(runs=runs, detector_seconds=dict(self.detector_seconds),
                          detector_failures=dict(self.detector_failures),
                          detector_first_failure=dict(self.detector_first_failure))

    def run_due(self, on_run: Callable[[str, bool], None]) -> PendingRuns:
        on_run("fake-run-1", not self.fail)
        return PendingRuns(succeeded=0 if self.fail else 1, failed=1 if self.fail else 0)
