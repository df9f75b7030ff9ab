"""The Qraft explorer: a findings web app with charts, served by `qraft api` at /."""

from qraft_core.api.explorer.routes import explorer_router, mount_explorer

__all__ = ["explorer_router", "mount_explorer"]
