"""`/sources` and `/config/sources`: configured sources, their status, and adding one."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from qraft_core.api.context import ApiContext, errors, json_write
from qraft_core.config import SourceConfig, load_sources
from qraft_core.events import iso
from qraft_core.services.sources import SourceService


def sources_router(ctx: ApiContext) -> APIRouter:
    reader, writer = ctx.dependencies()
    router = APIRouter(tags=["sources"])

    @router.get("/sources", dependencies=[Depends(reader)], responses=errors(400, 401, 403, 503))
    def get_sources() -> dict[str, Any]:
        """Configured sources with their registry status and newest landed event."""
        sources = load_sources(ctx.runtime.config_path)
        with ctx.store.session():
            registry = {
                row["name"]: row
                for row in ctx.store.select("source_registry").iter_rows(named=True)
            }
            newest = ctx.store.max_time("raw_events", "source")
        return {
            "sources": [
                {
                    **source.model_dump(mode="json", exclude={"credentials"}),
                    "credentials": sorted(source.credentials),
                    "status": registry.get(source.name, {}).get("status", "unregistered"),
                    "last_event_at": iso(newest[source.name]) if source.name in newest else None,
                }
                for source in sources.sources
            ]
        }

    @router.post("/config/sources", responses=errors(400, 401, 403, 503), dependencies=json_write(writer))
    def post_source(source: SourceConfig, actor: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        """Add a source or replace the one with the same name in sources.yaml (validated first)."""
        return SourceService(ctx.runtime.config_path, ctx.store, ctx.sources_lock).put(source, actor)

    return router
