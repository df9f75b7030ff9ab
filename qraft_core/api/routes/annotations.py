"""`/pattern/{id}/annotations` and `/annotations/stats`: human verdicts and notes."""

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from qraft_core.annotations import Label
from qraft_core.api.context import ApiContext, ApiError, errors, known_pattern
from qraft_core.api.routes.patterns import PatternId


class AnnotationIn(BaseModel):
    # A misspelt field ("notes") is refused rather than stored as an empty note.
    model_config = ConfigDict(extra="forbid")

    label: Label
    note: str = Field(default="", max_length=4000)
    author: str = Field(default="", max_length=200)


async def keys_once(request: Request) -> None:
    """A key written twice in the body is a 400 naming it: JSON keeps the last, so of
    `{"label": "confirmed", "label": "false_alarm"}` one verdict was stored without a word."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        twice = next((key for key in keys if keys.count(key) > 1), None)
        if twice is not None:
            raise ApiError(400, f"body: the key {twice!r} is written twice")
        return dict(items)

    # A body that is not JSON at all: the body's own validation says how.
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(await request.body(), object_pairs_hook=pairs)


def annotations_router(ctx: ApiContext) -> APIRouter:
    reader, writer = ctx.dependencies()
    router = APIRouter(tags=["annotations"])

    @router.get(
        "/pattern/{pattern_id}/annotations",
        dependencies=[Depends(reader)],
        responses=errors(400, 401, 403, 404, 503),
    )
    def get_annotations(pattern_id: PatternId) -> dict[str, Any]:
        """A pattern's annotations, oldest first."""
        with known_pattern(pattern_id):
            annotations = ctx.patterns.annotations(pattern_id)
        return {"annotations": [a.model_dump(mode="json") for a in annotations]}

    @router.post(
        "/pattern/{pattern_id}/annotations",
        status_code=201,
        responses=errors(400, 401, 403, 404, 503),
        dependencies=[Depends(keys_once)],
    )
    def post_annotation(
        pattern_id: PatternId, body: AnnotationIn, actor: Annotated[str, Depends(writer)]
    ) -> dict[str, Any]:
        """Confirm a pattern, mark it a false alarm, or add a note."""
        try:
            with known_pattern(pattern_id):
                annotation = ctx.patterns.annotate(
                    pattern_id, body.label, body.note, body.author, actor=actor
                )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        finally:
            ctx.cache.written()  # even a failed write may have stored a part of itself
        return annotation.model_dump(mode="json")

    @router.get(
        "/annotations/stats", dependencies=[Depends(reader)], responses=errors(400, 401, 403, 503)
    )
    def get_annotation_stats() -> dict[str, Any]:
        """Per detector: confirmed findings, false alarms, notes and precision over verdicts."""
        return {"detectors": ctx.patterns.annotation_stats()}

    return router
