"""`/replay`: re-run windows of some sources through the pipeline."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from qraft_core.api.context import ApiContext, ApiError, errors, json_write
from qraft_core.api.launcher import ReplayConflict
from qraft_core.audit import record_audit
from qraft_core.config import load_sources
from qraft_core.events import iso
from qraft_core.explain.catalog import check_range, parse_time


class ReplayIn(BaseModel):
    # A misspelt field ("source") is refused rather than read as "every enabled source".
    model_config = ConfigDict(extra="forbid")

    start: str = Field(description="ISO 8601, inclusive")
    end: str = Field(description="ISO 8601, exclusive")
    sources: list[str] = Field(
        default_factory=list, description="Source names; empty means every enabled source"
    )


def replay_router(ctx: ApiContext) -> APIRouter:
    _, writer = ctx.dependencies()
    router = APIRouter(tags=["replay"])

    @router.post(
        "/replay",
        status_code=202,
        responses=errors(400, 401, 403, 409, 503),
        dependencies=json_write(writer),
    )
    def post_replay(body: ReplayIn, actor: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        """Replay [start, end) of some sources (for debugging and CI)."""
        start, end = parse_time(body.start, "start"), parse_time(body.end, "end")
        check_range(start, end, ctx.config.api.max_range_days)
        configured = load_sources(ctx.runtime.config_path)
        known = {s.name for s in configured.sources}
        unknown = sorted(set(body.sources) - known)
        if unknown:
            raise ApiError(
                400,
                f"sources: unknown source(s) {', '.join(map(repr, unknown))} "
                f"(configured: {', '.join(sorted(known)) or 'none'})",
            )
        sources = sorted(set(body.sources)) or [s.name for s in configured.sources if s.enabled]
        if ctx.launcher is None:
            raise ApiError(
                503, "replays are not available here: this API was started without a replay runner"
            )
        try:
            launched = ctx.launcher.launch(start, end, sources)
        except ReplayConflict as exc:
            raise ApiError(409, str(exc)) from None
        window = {"start": iso(start), "end": iso(end), "sources": sources}
        record_audit(ctx.store, actor, "replay", ",".join(sources), None, {**window, **launched})
        return {**launched, **window}

    return router
