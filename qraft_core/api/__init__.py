"""The REST and Explain API (FastAPI): sources, patterns, cards, annotations, replays, exports."""

from qraft_core.api.app import create_app
from qraft_core.api.context import RuntimeLike
from qraft_core.api.launcher import ReplayConflict, ReplayLauncher

__all__ = ["ReplayConflict", "ReplayLauncher", "RuntimeLike", "create_app"]
