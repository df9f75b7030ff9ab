"""What every router of the API shares: configuration, store, keys, the response cache, errors."""

import contextlib
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from qraft_core.annotations import UnknownPattern
from qraft_core.api.cache import Body, ResponseCache
from qraft_core.api.launcher import ReplayLauncher
from qraft_core.bootstrap import RuntimeLike, Services, bootstrap
from qraft_core.config import QraftConfig
from qraft_core.events import PatternEvent
from qraft_core.explain.catalog import (
    PatternQuery,
    parse_time,
    parse_type,
    resolve_range,
)
from qraft_core.explain.llm import LlmClient, llm_client
from qraft_core.explain.templates import load_cards_config
from qraft_core.operators.stream_names import stream_name_problem
from qraft_core.services.patterns import CONTROL_CHARACTERS, PatternService, StreamOrSourceQuery
from qraft_core.store.base import EventStore


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ErrorBody(BaseModel):
    error: str


_MEANING = {
    400: "Bad input",
    401: "API key missing",
    403: "API key wrong",
    404: "Not found",
    409: "Conflicts with a running replay",
    503: "Store, key or replay runner unavailable",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of an operation."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


def plain_text(value: str | None, name: str) -> str | None:
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise ApiError(400, f"{name}: control characters are not allowed")
    return value


def stream_filter(value: str | None, name: str) -> str | None:
    """A stream or source filter: refused only when no stream the pipeline makes could have this name."""
    problem = None if value is None else stream_name_problem(value)
    if problem is not None:
        raise ApiError(400, f"{name}: {problem}")
    return value


def json_body(data: Any) -> Body:
    """JSON as Starlette's JSONResponse writes it."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Body(text.encode(), "application/json")


def respond(body: Body) -> Response:
    return Response(body.content, media_type=body.media_type)


@dataclass
class ApiContext:
    runtime: RuntimeLike
    launcher: ReplayLauncher | None
    llm: LlmClient | None = field(init=False)
    services: Services = field(init=False)
    cache: ResponseCache = field(init=False)
    key_header: APIKeyHeader = field(init=False)
    sources_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        api = self.config.api
        self.llm = llm_client(self.config.llm)
        self.services = bootstrap(self.runtime, llm=self.llm)
        # A broken cards.yaml stops the API at start (the pattern service reads it on first use,
        # which must not open the store before the first request).
        load_cards_config(self.runtime.config_path)
        self.cache = ResponseCache(
            lambda: self.store,
            api.cache_check_s,
            api.cache_ttl_s,
            int(api.cache_max_mb * 1024 * 1024),
        )
        self.key_header = APIKeyHeader(
            name="X-API-Key", auto_error=False, description=f"The key held in ${api.api_key_env}"
        )

    @property
    def config(self) -> QraftConfig:
        return self.runtime.config

    @property
    def store(self) -> EventStore:
        return self.runtime.store

    @property
    def patterns(self) -> PatternService:
        return self.services.patterns

    def check_key(self, given: str | None) -> str:
        """The actor recorded in the audit log for this key; ApiError when it is missing or wrong."""
        env = self.config.api.api_key_env
        expected = os.environ.get(env, "")
        if not expected:
            raise ApiError(503, f"no API key is configured: set {env} to enable this endpoint")
        if not given:
            raise ApiError(401, "missing API key (send it in the X-API-Key header)")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "wrong API key")
        return "key:" + hashlib.sha256(expected.encode()).hexdigest()[:8]

    def dependencies(self) -> tuple[Any, Any]:
        """(reader, writer): FastAPI dependencies that check the key; the writer returns the actor."""

        def reader(key: Annotated[str | None, Security(self.key_header)] = None) -> None:
            if self.config.api.read_requires_key:
                self.check_key(key)

        def writer(key: Annotated[str | None, Security(self.key_header)] = None) -> str:
            return self.check_key(key)

        return reader, writer

    def pattern_or_404(self, pattern_id: str) -> PatternEvent:
        with known_pattern(pattern_id):
            return self.patterns.get(pattern_id)

    def pattern_query(
        self,
        start: str | None,
        end: str | None,
        type_: str | None,
        source: str | None,
        min_confidence: float | None,
        capped: bool = True,
    ) -> PatternQuery:
        """The query of these parameters; `capped`: spans at most api.max_range_days (pages, not
        exports, which stream any range page by page)."""
        cap = self.config.api.max_range_days if capped else None
        begin, finish = resolve_range(self.store, _time(start, "start"), _time(end, "end"), cap)
        return StreamOrSourceQuery(
            begin, finish, parse_type(type_), stream_filter(source, "source"), min_confidence
        )


def json_write(writer: Any) -> list[Any]:
    """The dependencies of a write with a JSON body: the key first (`writer`, the one its handler
    takes the actor from: FastAPI then runs it once), then no key written twice."""
    return [Depends(writer), Depends(keys_once)]


async def keys_once(request: Request) -> None:
    """A key written twice in the body, at any depth, is a 400 naming it: JSON keeps the last, so of
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


@contextmanager
def known_pattern(pattern_id: str) -> Iterator[None]:
    """Around a use case on one pattern: a 400 for an id no pattern can have, a 404 for an unknown one."""
    plain_text(pattern_id, "pattern_id")
    try:
        yield
    except UnknownPattern as exc:
        raise ApiError(404, str(exc)) from None


# An unencoded `+` of a UTC offset arrives as a space ("…T10:00:00 02:00"); nothing else puts one there.
_DECODED_PLUS = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def _time(value: str | None, name: str) -> datetime | None:
    return None if value is None else parse_time(_DECODED_PLUS.sub(r"\1+\2", value.strip()), name)
