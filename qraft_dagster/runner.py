"""The pipeline runner of `qraft_core.services` on Dagster: the same job, assets and sensor as
under the daemon, executed in this process, so the runs show up in the UI afterwards."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import Any

from dagster import AssetKey, BetaWarning, DagsterInstance, Definitions, PreviewWarning

from qraft_core.runtime import Runtime, jvm_crash_env
from qraft_core.services.ports import PendingRuns, WindowRuns
from qraft_dagster.definitions import build_definitions
from qraft_dagster.event_log import ephemeral_instance
from qraft_dagster.execute import catch_up, open_instance
from qraft_dagster.replay import run_replay

# The assets whose materialized windows the summary of a run counts: the first and the last.
COUNTED_ASSETS = ("clean_events", "explanation_cards")


class DagsterPipelineRunner:
    """Runs the pipeline job for `rt`, on its persistent Dagster instance or, when `ephemeral`,
    on a throw-away one (CI: nothing is left behind)."""

    def __init__(self, rt: Runtime, ephemeral: bool = False) -> None:
        self.rt = rt
        self.ephemeral = ephemeral
        # Qraft's own use of beta Dagster options (backfill policies) is not news to the person running it.
        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)
        logging.getLogger("dagster").setLevel(logging.WARNING)

    @cached_property
    def definitions(self) -> Definitions:
        return build_definitions(str(self.rt.config_path.resolve()))

    @cached_property
    def instance(self) -> DagsterInstance:
        if self.ephemeral:
            return ephemeral_instance()
        return open_instance(self.rt.config.dagster_home, self.rt.config.dagster)

    def materialize(self, start: datetime, end: datetime, on_progress: Callable[[int], None]) -> WindowRuns:
        # A JVM crash (CapyMOA) leaves its report where the replay record can name it.
        os.environ.update(jvm_crash_env(self.rt.crash_dir, {"JAVA_TOOL_OPTIONS": os.environ.get("JAVA_TOOL_OPTIONS", "")}))
        outcome = run_replay(self.definitions, self.instance, self.rt, start, end, on_progress)
        return WindowRuns(runs=outcome["runs"], failed_runs=outcome["failed_runs"],
                          detector_seconds=outcome["detector_seconds"],
                          detector_failures=outcome["detector_failures"],
                          detector_first_failure=outcome["detector_first_failure"])

    def run_due(self, on_run: Callable[[str, bool], None]) -> PendingRuns:
        counts = PendingRuns()

        def count(request: Any, result: Any) -> None:
            if result.success:
                counts.succeeded += 1
            else:
                counts.failed += 1
            on_run(request.run_key, result.success)

        catch_up(self.definitions, self.instance, count)  # from and to the daemon's cursor: `qraft up` continues here
        counts.windows_materialized = {
            name: len(self.instance.get_materialized_partitions(AssetKey(name))) for name in COUNTED_ASSETS
        }
        return counts
