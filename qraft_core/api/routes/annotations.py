"""`/pattern/{id}/annotations` and `/annotations/stats`: human verdicts and notes."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from qraft_core.annotations import Label
from qraft_core.api.context import ApiContext, ApiError, errors, json_write, known_pattern
from qraft_core.api.routes.patterns import PatternId


class AnnotationIn(BaseModel):
    # A misspelt field ("notes") is refused rather than stored as an empty note.
    model_config = ConfigDict(extra="forbid")

    label: Label
    note: str = Field(default="", max_length=4000)
    author: str = Field(default="", max_length=200)


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
        dependencies=json_write(writer),
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
