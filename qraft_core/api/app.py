"""The REST and Explain API.

Reads are open unless `api.read_requires_key`; every write needs the key held
in the environment variable named by `api.api_key_env` (header `X-API-Key`)
and is recorded in the audit log. Errors are JSON `{"error": message}` with
every secret redacted. Handlers are plain functions run on the server's
thread pool: the store is safe to share between threads (see
`qraft_core/store/sessions.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qraft_core.api.context import ApiContext, ApiError, RuntimeLike
from qraft_core.api.docs import add_offline_docs
from qraft_core.api.explorer import mount_explorer
from qraft_core.api.launcher import ReplayLauncher
from qraft_core.api.routes.annotations import annotations_router
from qraft_core.api.routes.export import export_router
from qraft_core.api.routes.metrics import metrics_router
from qraft_core.api.routes.patterns import cards_router, patterns_router
from qraft_core.api.routes.replay import replay_router
from qraft_core.api.routes.sources import sources_router
from qraft_core.config import ConfigError
from qraft_core.explain.catalog import QueryError
from qraft_core.redact import install_redaction, redact
from qraft_core.store.base import StoreError, StoreUnavailable


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": redact(message)}, status_code=status, headers=headers)


def _problem(found: Mapping[str, Any]) -> str:
    """One validation problem as `where: what was expected`."""
    where = ".".join(str(part) for part in found["loc"])
    if found["type"] == "json_invalid":  # loc ends with the character offset where parsing stopped
        reason = found.get("ctx", {}).get("error", found["msg"])
        return f"body: not valid JSON at character {found['loc'][-1]} ({reason})"
    if found["type"] == "extra_forbidden":
        return f"{where}: an unknown field (check the spelling)"
    return f"{where}: {found['msg']}"


class SingleValuedQuery:
    """ASGI middleware: a query parameter given twice is a 400 naming it. Every parameter takes one
    value, and FastAPI keeps the last of several: `?type=concept_drift&type=anomaly` silently meant
    anomalies alone, and `?type=bogus&type=anomaly` went unchecked."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            names = [name for name, _ in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)]
            repeated = next((name for name in names if names.count(name) > 1), None)
            if repeated is not None:
                response = error(400, f"{repeated}: given {names.count(repeated)} times; give it once")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def add_error_handlers(app: FastAPI) -> None:
    """Bad input and failures as `{"error": message}` with their status (query parameters given twice too)."""
    app.add_middleware(SingleValuedQuery)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error(exc.status, exc.message)

    async def bad_input(_: Request, exc: Exception) -> JSONResponse:
        return error(400, str(exc))

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error(400, "; ".join(_problem(found) for found in exc.errors()))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        # Unknown paths (404), wrong methods (405) and unreadable bodies get the same {"error": ...} shape.
        assert isinstance(exc, StarletteHTTPException)
        return error(exc.status_code, str(exc.detail), exc.headers)

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return error(503, f"the store is unavailable, retry later: {exc}")

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        return error(500, f"store error: {exc}")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(QueryError, bad_input)
    app.add_exception_handler(ConfigError, bad_input)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(StoreError, store_error)


def create_app(runtime: RuntimeLike, replay_launcher: ReplayLauncher | None = None) -> FastAPI:
    """The API over a runtime (anything with .config, .config_path, .store and .data_dir)."""
    install_redaction()
    ctx = ApiContext(runtime, replay_launcher)
    app = FastAPI(
        title="Qraft API",
        version="1.0",
        description="Pattern events, their explanation cards, annotations, sources, replays and exports.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.qraft = ctx
    add_error_handlers(app)
    for router in (
        sources_router(ctx),
        patterns_router(ctx),
        cards_router(ctx),
        annotations_router(ctx),
        replay_router(ctx),
        export_router(ctx),
        metrics_router(ctx),
    ):
        app.include_router(router)
    add_offline_docs(app)
    mount_explorer(app, runtime)
    return app
