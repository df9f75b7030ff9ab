"""The explorer: its JSON endpoints under /explorer/api and the web app at /.

The web app is plain HTML, JavaScript modules and CSS in `static/`, served from
this package (no build step, nothing fetched from elsewhere). Writes (verdicts,
notes, replays) go through the REST API's own endpoints with the key the user
enters; the endpoints here only read.
"""

import hmac
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from qraft_core.api.context import plain_text, stream_filter
from qraft_core.api.explorer import queries
from qraft_core.evaluate import DEFAULT_TRUTH
from qraft_core.events import iso
from qraft_core.explain.catalog import (
    PatternQuery,
    check_range,
    load_pattern,
    parse_time,
    parse_type,
    resolve_range,
)
from qraft_core.operators.stream_names import MAX_STREAM_NAME_CHARS
from qraft_core.replays import ReplayRegistry

STATIC = Path(__file__).parent / "static"
# A backstop should text from the data ever reach the page as markup: scripts come only from
# the explorer's own files. Styles may be inline (bar widths are set as style attributes).
EXPLORER_CSP = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'"
}
_MEANING = {400: "Bad input", 401: "API key missing or wrong (reads need it)", 404: "Not found",
            503: "Store unavailable"}
# Bounds on what one chart request reads, so a wide window cannot exhaust the API.
MAX_BARS = 20_000
MAX_RAW_ROWS = 20_000
# What a stream's chart shows when the request does not give both ends of the range.
STREAM_SPAN = timedelta(hours=3)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": _MEANING[code]} for code in (*codes, 401, 503)}


def explorer_router(runtime: Any) -> APIRouter:
    """The explorer's read endpoints over a runtime (anything with .config, .store and .data_dir)."""
    config = runtime.config
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def reader(key: Annotated[str | None, Security(key_header)] = None) -> None:
        # The same rule as the REST API's reads: open unless api.read_requires_key.
        if not config.api.read_requires_key:
            return
        expected = os.environ.get(config.api.api_key_env, "")
        if not expected or not key or not hmac.compare_digest(key.encode(), expected.encode()):
            raise _Refused()

    router = APIRouter(prefix="/explorer/api", tags=["explorer"], dependencies=[Depends(reader)])
    _add_finding_routes(router, runtime)
    _add_stream_routes(router, runtime)
    _add_pipeline_routes(router, runtime)
    return router


def _add_finding_routes(router: APIRouter, runtime: Any) -> None:
    """The inbox, its live pulse and one finding's view."""
    config = runtime.config

    @router.get("/findings", responses=_errors(400))
    def findings(
        start: str | None = Query(None, description="ISO 8601, inclusive, on window_start"),
        end: str | None = Query(None, description="ISO 8601, exclusive"),
        type: str | None = Query(None),
        stream: str | None = Query(None, max_length=MAX_STREAM_NAME_CHARS),
        min_confidence: float | None = Query(None, ge=0.0, le=1.0, allow_inf_nan=False),
        verdict: str = Query("any", pattern="^(" + "|".join(queries.VERDICT_FILTERS) + ")$"),
        limit: int = Query(50, ge=1, le=config.api.max_page),
        cursor: str | None = Query(None, max_length=2000),
    ) -> dict[str, Any]:
        """The inbox: findings with their verdicts, filtered, a keyset page at a time."""
        for name, value in (("type", type), ("cursor", cursor)):
            plain_text(value, name)
        stream_filter(stream, "stream")
        begin, finish = resolve_range(
            runtime.store,
            parse_time(start, "start") if start else None,
            parse_time(end, "end") if end else None,
            config.api.max_range_days,
        )
        query = PatternQuery(begin, finish, parse_type(type), stream or None, min_confidence)
        with runtime.store.session():
            items, next_cursor = queries.inbox_page(runtime.store, query, verdict, limit, cursor)
        return {"start": iso(begin), "end": iso(finish), "items": items, "next_cursor": next_cursor}

    @router.get("/pulse", responses=_errors())
    def pulse() -> dict[str, Any]:
        """How many findings there are and the newest window: the inbox polls this for live updates."""
        with runtime.store.session():
            return queries.newest_finding(runtime.store)

    @router.get("/finding/{pattern_id}", responses=_errors(400, 404))
    def finding(
        pattern_id: Annotated[str, PathParam(min_length=1, max_length=256)],
        minutes: int = Query(15, ge=1, le=24 * 60, description="Minutes of series either side"),
    ) -> Any:
        """A finding with its series (features and raw values), the alarms and headlines around it."""
        plain_text(pattern_id, "pattern_id")
        with runtime.store.session():
            pattern = load_pattern(runtime.store, pattern_id)
            if pattern is None:
                return JSONResponse({"error": f"no pattern with id {pattern_id!r}"}, status_code=404)
            return queries.finding_view(
                runtime.store, pattern, minutes, config.explain.context_minutes, MAX_BARS, MAX_RAW_ROWS
            )


def _add_stream_routes(router: APIRouter, runtime: Any) -> None:
    """The stream catalog and one stream's chart."""
    config = runtime.config

    @router.get("/streams", responses=_errors())
    def streams() -> dict[str, Any]:
        """Every stream with feature bars: its columns, extent and number of findings."""
        with runtime.store.session():
            return {"streams": queries.stream_catalog(runtime.store)}

    @router.get("/stream", responses=_errors(400))
    def stream(
        stream: str = Query(..., min_length=1, max_length=MAX_STREAM_NAME_CHARS),
        start: str | None = Query(None),
        end: str | None = Query(None),
    ) -> dict[str, Any]:
        """One stream's features with its findings and detector alarms over [start, end): with one
        bound, the 3 hours from or up to it; with neither, the stream's newest 3 hours of bars."""
        stream_filter(stream, "stream")
        begin = parse_time(start, "start") if start else None
        finish = parse_time(end, "end") if end else None
        with runtime.store.session():
            begin, finish = queries.stream_range(runtime.store, stream, begin, finish, STREAM_SPAN)
            check_range(begin, finish, config.api.max_range_days)
            return {
                "start": iso(begin),
                "end": iso(finish),
                **queries.stream_view(runtime.store, stream, begin, finish, MAX_BARS),
            }


def _add_pipeline_routes(router: APIRouter, runtime: Any) -> None:
    """The pipeline's health, the evaluation against ground truth and replay records."""
    config = runtime.config

    @router.get("/pipeline", responses=_errors())
    def pipeline() -> dict[str, Any]:
        """Rows per step, dead letters by reason, newest rows per step, lag, and the Dagster UI's port."""
        with runtime.store.session():
            view = queries.pipeline_view(runtime.store, newest_rows=5)
        return {**view, "dagster_port": config.dagster.port}

    @router.get("/evaluation", responses=_errors(404))
    def evaluation() -> Any:
        """Truth items against findings, when the ground truth file is present."""
        with runtime.store.session():
            view = queries.evaluation_view(runtime.store, DEFAULT_TRUTH)
        if view is None:
            return JSONResponse({"error": f"no ground truth file at {DEFAULT_TRUTH}"}, status_code=404)
        return view

    @router.get("/replays/{replay_id}", responses=_errors(400, 404))
    def replay_status(replay_id: Annotated[str, PathParam(min_length=1, max_length=64)]) -> Any:
        """A replay's record: running, succeeded, failed or regression, with its summary."""
        registry = ReplayRegistry(runtime.data_dir / "replays")
        try:
            record = registry.get(replay_id)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if record is None:
            return JSONResponse({"error": f"no replay with id {replay_id!r}"}, status_code=404)
        return vars(record)


class _Refused(Exception):
    """A read without the key while api.read_requires_key."""


def mount_explorer(app: FastAPI, runtime: Any) -> None:
    """Serve the explorer on `app`: the web app at / and its endpoints under /explorer/api."""
    app.include_router(explorer_router(runtime))
    app.mount("/explorer/static", StaticFiles(directory=STATIC), name="explorer-static")

    @app.exception_handler(_Refused)
    async def _refused(*_: object) -> JSONResponse:
        return JSONResponse({"error": "this API requires the key for reads (X-API-Key)"}, status_code=401)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache", **EXPLORER_CSP})
