"""The REST and Explain API.

Reads are open unless `api.read_requires_key`; every write needs the key held
in the environment variable named by `api.api_key_env` (header `X-API-Key`)
and is recorded in the audit log. Errors are JSON `{"error": message}` with
every secret redacted. Handlers are plain functions run on the server's
thread pool: the store is safe to share between threads (see
`qraft_core/store/sessions.py`).
"""

from __future__ import annotations

import email.message
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


def _is_json(media_type: str | None) -> bool:
    """Whether a Content-Type is one FastAPI parses as JSON (application/json, application/*+json),
    read the way FastAPI reads it: `text/json` is not one."""
    if not media_type:
        return False
    message = email.message.Message()
    message["content-type"] = media_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


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


# The largest legitimate body, an annotation whose 4000-character note is written in JSON escapes
# (up to 12 bytes a character), fits with room to spare; so does any sources.yaml entry or replay.
MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: a request body over MAX_BODY_BYTES is a 413, refused before anything reads or
    parses it (and before the key is checked: an anonymous client cannot make the API buffer more)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        body: bytes | None = None if declared.isdigit() and int(declared) > MAX_BODY_BYTES else b""
        while body is not None:  # a body sent in chunks is counted as it comes
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                body = None
            elif not message.get("more_body", False):
                break
        if body is None:
            response = error(413, f"body: larger than the limit of {MAX_BODY_BYTES} bytes")
            await response(scope, receive, send)
            return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class HeadAsGet:
    """ASGI middleware: HEAD is answered as GET without the body (uptime checks probe with HEAD)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def add_error_handlers(app: FastAPI) -> None:
    """Bad input and failures as `{"error": message}` with their status (query parameters given twice
    and bodies over MAX_BODY_BYTES too)."""
    app.add_middleware(SingleValuedQuery)
    app.add_middleware(BodyLimit)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error(exc.status, exc.message)

    async def bad_input(_: Request, exc: Exception) -> JSONResponse:
        return error(400, str(exc))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        media_type = request.headers.get("content-type")
        if not _is_json(media_type) and any(found["loc"][0] == "body" for found in exc.errors()):
            # FastAPI reads any other body as bytes, then says only that they are no object.
            got = repr(media_type) if media_type else "no Content-Type"
            return error(400, f"body: must be JSON sent with Content-Type: application/json (got {got})")
        return error(400, "; ".join(_problem(found) for found in exc.errors()))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        # Unknown paths (404), wrong methods (405) and unreadable bodies get the same {"error": ...} shape.
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI says only "error parsing the body"
            bad = exc.__cause__
            return error(400, f"body: not valid UTF-8 (byte {bad.start} is 0x{bad.object[bad.start]:02x})")
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
    app.add_middleware(HeadAsGet)
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
