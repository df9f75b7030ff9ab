"""`/patterns`, `/pattern/{id}`, `/pattern/{id}/context` and `/explain/{id}`: findings and their cards."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from qraft_core.api.cache import CACHED_TABLES, Body
from qraft_core.api.context import ApiContext, errors, json_body, known_pattern, respond
from qraft_core.events import iso
from qraft_core.operators.stream_names import MAX_STREAM_NAME_CHARS

PatternId = Annotated[str, PathParam(min_length=1, max_length=256, description="A pattern's id")]
# What a card is built from: the pattern, its annotations, its clean context and stored LLM texts.
CARD_TABLES = CACHED_TABLES


def confidence_query() -> Any:
    return Query(default=None, ge=0.0, le=1.0, allow_inf_nan=False, description="Only patterns at least this confident")


def source_query() -> Any:
    return Query(
        None,
        max_length=MAX_STREAM_NAME_CHARS,
        description="A source (all of its streams, e.g. binance_spot) or one stream (binance_spot:BTCUSDT)",
    )


def patterns_router(ctx: ApiContext) -> APIRouter:
    reader, _ = ctx.dependencies()
    router = APIRouter(tags=["patterns"], dependencies=[Depends(reader)])
    max_page = ctx.config.api.max_page

    @router.get("/patterns", responses=errors(400, 401, 403, 503))
    def get_patterns(
        start: str | None = Query(None, description="ISO 8601, inclusive, on window_start"),
        end: str | None = Query(None, description="ISO 8601, exclusive"),
        type: str | None = Query(
            None, description="concept_drift, anomaly, cluster_change or freq_pattern"
        ),
        source: str | None = source_query(),
        min_confidence: float | None = confidence_query(),
        limit: int = Query(100, ge=1, le=max_page),
        cursor: str | None = Query(
            None, max_length=2000, description="next_cursor of the previous page"
        ),
    ) -> Response:
        """Pattern events in (window_start, pattern_id) order, a keyset page at a time."""

        def build() -> tuple[Body, bool]:
            selected = ctx.pattern_query(start, end, type, source, min_confidence)
            page, next_cursor = ctx.patterns.page(selected, limit, cursor)
            body = {
                "start": iso(selected.start),
                "end": iso(selected.end),
                "count": len(page),
                "items": [p.model_dump(mode="json") for p in page],
                "next_cursor": next_cursor,
            }
            return json_body(body), True

        key = ("patterns", start, end, type, source, min_confidence, limit, cursor)
        return respond(ctx.cache.get(key, ("pattern_events",), build))

    @router.get("/pattern/{pattern_id}", responses=errors(400, 401, 403, 404, 503))
    def get_pattern(pattern_id: PatternId) -> Response:
        """One pattern with its context summary, rule-based card and annotations."""

        def build() -> tuple[Body, bool]:
            pattern = ctx.pattern_or_404(pattern_id)
            card = ctx.patterns.card(pattern)
            body = {
                "pattern": pattern.model_dump(mode="json"),
                "context": card.context.model_dump(mode="json"),
                "card": card.model_dump(mode="json"),
                "annotations": [a.model_dump(mode="json") for a in card.annotations],
            }
            return json_body(body), True

        return respond(ctx.cache.get(("pattern", pattern_id), CARD_TABLES, build))

    _add_context_route(router, ctx)
    return router


def _add_context_route(router: APIRouter, ctx: ApiContext) -> None:
    """`/pattern/{id}/context`: the clean rows behind a pattern's card."""

    @router.get("/pattern/{pattern_id}/context", responses=errors(400, 401, 403, 404, 503))
    def get_context(
        pattern_id: PatternId,
        limit: int = Query(500, ge=1, le=ctx.config.api.max_page),
        cursor: str | None = Query(None, max_length=2000),
    ) -> dict[str, Any]:
        """The full clean rows of a pattern's context window, a keyset page at a time."""
        with known_pattern(pattern_id):
            return ctx.patterns.context(pattern_id, limit, cursor).as_json()


def cards_router(ctx: ApiContext) -> APIRouter:
    reader, _ = ctx.dependencies()
    router = APIRouter(tags=["patterns"], dependencies=[Depends(reader)])

    @router.get(
        "/explain/{pattern_id}",
        responses={**errors(400, 401, 403, 404, 503), 200: {"content": {"text/markdown": {}}}},
    )
    def get_explain(
        pattern_id: PatternId,
        mode: Literal["human", "llm"] = "human",
        lang: Literal["en", "zh"] | None = None,
        format: Literal["json", "markdown"] = "json",
    ) -> Response:
        """The card: rule-based (`human`) or with an LLM-based explanation added (`llm`)."""
        language = lang or ctx.config.explain.language

        def build() -> tuple[Body, bool]:
            pattern = ctx.pattern_or_404(pattern_id)
            card = ctx.patterns.card(pattern, mode, language)
            body = (
                Body(card.markdown.encode(), "text/markdown; charset=utf-8")
                if format == "markdown"
                else json_body(card.model_dump(mode="json"))
            )
            # An LLM that did not answer is asked again next time.
            return body, card.mode == mode

        return respond(
            ctx.cache.get(("explain", pattern_id, mode, language, format), CARD_TABLES, build)
        )

    return router
