"""`/export/patterns`: every matching pattern as CSV or JSON, streamed."""

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from qraft_core.api.context import ApiContext, errors
from qraft_core.api.routes.patterns import confidence_query, source_query


def export_router(ctx: ApiContext) -> APIRouter:
    reader, _ = ctx.dependencies()
    router = APIRouter(tags=["export"])

    @router.get(
        "/export/patterns",
        dependencies=[Depends(reader)],
        responses={
            **errors(400, 401, 403, 503),
            200: {"content": {"text/csv": {}, "application/json": {}}},
        },
    )
    def export_patterns(
        format: Literal["csv", "json"] = "csv",
        start: str | None = Query(None, description="ISO 8601, inclusive"),
        end: str | None = Query(None, description="ISO 8601, exclusive"),
        type: str | None = None,
        source: str | None = source_query(),
        min_confidence: float | None = confidence_query(),
    ) -> StreamingResponse:
        """Every matching pattern as CSV or a JSON array, streamed, whatever the span (without
        start/end: every stored pattern), as `qraft patterns export` does."""
        selected = ctx.pattern_query(start, end, type, source, min_confidence, capped=False)
        # The first page is read now, so a store failure is still a proper error response.
        chunks = ctx.patterns.export_text(selected, format)
        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        disposition = f'attachment; filename="patterns.{format}"'
        return StreamingResponse(
            chunks, media_type=media, headers={"Content-Disposition": disposition}
        )

    return router
