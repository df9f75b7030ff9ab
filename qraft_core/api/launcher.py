"""The seam between the API and whatever runs replays (Dagster backfills in a deployment)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from qraft_core.replays import ReplayConflict

__all__ = ["ReplayConflict", "ReplayLauncher"]


class ReplayLauncher(Protocol):
    def launch(self, start: datetime, end: datetime, sources: list[str]) -> dict[str, str]:
        """Start a replay of [start, end) for `sources`; returns {"id": ..., "status": ...}.

        Raises ReplayConflict when it overlaps a replay still running.
        """
        ...
