"""The REST and Explain API.

Reads are open unless `api.read_requires_key`; every write needs the key held
in the environment variable named by `api.api_key_env` (header `X-API-Key`)
and is recorded in the audit log. Errors are JSON `{"error": message}`.
"""

import hashlib
import hmac
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from qraft_core.annotations import (
    Label,
    UnknownPattern,
    add_annotation,
    detector_stats,
    list_annotations,
)
from qraft_core.api.explorer import mount_explorer
from qraft_core.api.launcher import ReplayConflict, ReplayLauncher
from qraft_core.audit import record_audit
from qraft_core.config import ConfigError, QraftConfig, SourceConfig, load_sources, read_yaml
from qraft_core.events import PatternEvent, iso
from qraft_core.explain.catalog import (
    PatternQuery,
    QueryError,
    check_range,
    export_chunks,
    iter_patterns,
    keyset_page,
    load_pattern,
    parse_time,
    parse_type,
    patterns_page,
    resolve_range,
)
from qraft_core.explain.context import context_filters, context_window
from qraft_core.explain.llm import llm_client
from qraft_core.explain.materialize import explain_pattern
from qraft_core.explain.templates import load_cards_config
from qraft_core.store.base import EventStore, StoreError, StoreUnavailable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PatternId = Annotated[str, PathParam(min_length=1, max_length=256, description="A pattern's id")]


class RuntimeLike(Protocol):
    config: QraftConfig
    config_path: Path
    data_dir: Path

    @property
    def store(self) -> EventStore: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ErrorBody(BaseModel):
    error: str


class AnnotationIn(BaseModel):
    label: Label
    note: str = Field(default="", max_length=4000)
    author: str = Field(default="", max_length=200)


class ReplayIn(BaseModel):
    start: str = Field(description="ISO 8601, inclusive")
    end: str = Field(description="ISO 8601, exclusive")
    sources: list[str] = Field(
        default_factory=list, description="Source names; empty means every enabled source"
    )


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "Bad input",
        401: "API key missing",
        403: "API key wrong",
        404: "Not found",
        409: "Conflicts with a running replay",
        503: "Store, key or replay runner unavailable",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in codes}


def _text(value: str | None, name: str) -> str | None:
    if value is not None and _CONTROL.search(value):
        raise ApiError(400, f"{name}: control characters are not allowed")
    return value


def _time(value: str | None, name: str) -> datetime | None:
    return None if value is None else parse_time(value, name)


def create_app(runtime_like: RuntimeLike, replay_launcher: ReplayLauncher | None = None) -> FastAPI:
    """The API over a runtime (anything with .config, .config_path, .store and .data_dir)."""
    runtime = runtime_like
    config = runtime.config
    cards = load_cards_config(runtime.config_path)
    llm = llm_client(config.llm)
    sources_lock = threading.Lock()
    app = FastAPI(
        title="Qraft API",
        version="1.0",
        description="Pattern events, their explanation cards, annotations, sources, replays and exports.",
    )

    # -- errors ------------------------------------------------------------
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error(400, "; ".join(problems))

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error(503, f"the store is unavailable, retry later: {exc}")

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return error(500, f"store error: {exc}")

    # -- keys --------------------------------------------------------------
    key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description=f"The key held in ${config.api.api_key_env}"
    )

    def check_key(given: str | None) -> str:
        expected = os.environ.get(config.api.api_key_env, "")
        if not expected:
            raise ApiError(
                503, f"no API key is configured: set {config.api.api_key_env} to enable this endpoint"
            )
        if not given:
            raise ApiError(401, "missing API key (send it in the X-API-Key header)")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "wrong API key")
        return "key:" + hashlib.sha256(expected.encode()).hexdigest()[:8]

    def writer(key: Annotated[str | None, Security(key_header)] = None) -> str:
        """The actor recorded in the audit log for a write."""
        return check_key(key)

    def reader(key: Annotated[str | None, Security(key_header)] = None) -> None:
        if config.api.read_requires_key:
            check_key(key)

    def pattern_or_404(pattern_id: str) -> PatternEvent:
        _text(pattern_id, "pattern_id")
        pattern = load_pattern(runtime.store, pattern_id)
        if pattern is None:
            raise ApiError(404, f"no pattern with id {pattern_id!r}")
        return pattern

    def query(
        start: str | None,
        end: str | None,
        type_: str | None,
        source: str | None,
        min_confidence: float | None,
    ) -> PatternQuery:
        begin, finish = resolve_range(
            runtime.store, _time(start, "start"), _time(end, "end"), config.api.max_range_days
        )
        return PatternQuery(begin, finish, parse_type(type_), _text(source, "source"), min_confidence)

    Reader = Depends(reader)
    Confidence = Query(default=None, ge=0.0, le=1.0, description="Only patterns at least this confident")

    # -- sources -----------------------------------------------------------
    @app.get("/sources", dependencies=[Reader], responses=_errors(400, 401, 403, 503), tags=["sources"])
    def get_sources() -> dict[str, Any]:
        """Configured sources with their registry status and newest landed event."""
        sources = load_sources(runtime.config_path)
        with runtime.store.session():
            registry = {
                row["name"]: row for row in runtime.store.select("source_registry").iter_rows(named=True)
            }
            newest = runtime.store.max_time("raw_events", "source")
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

    @app.post("/config/sources", responses=_errors(400, 401, 403, 503), tags=["sources"])
    def post_source(source: SourceConfig, actor: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        """Add a source or replace the one with the same name in sources.yaml (validated first)."""
        path = runtime.config_path / "sources.yaml"
        with sources_lock:
            data = read_yaml(path)
            entries = list(data.get("sources") or [])
            new_entry = source.model_dump(mode="json", exclude_defaults=True)
            index = next(
                (i for i, e in enumerate(entries) if isinstance(e, dict) and e.get("name") == source.name),
                None,
            )
            before = entries[index] if index is not None else None
            if index is None:
                entries.append(new_entry)
            else:
                entries[index] = new_entry
            text = yaml.safe_dump({**data, "sources": entries}, sort_keys=False, allow_unicode=True)
            with tempfile.TemporaryDirectory() as scratch:
                (Path(scratch) / "sources.yaml").write_text(text)
                load_sources(scratch)
            fd, staged = tempfile.mkstemp(dir=path.parent, prefix=".sources.", suffix=".yaml")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(staged, path)
        record_audit(runtime.store, actor, "config.sources", source.name, before, new_entry)
        return {"source": new_entry, "created": before is None}

    # -- patterns ----------------------------------------------------------
    @app.get("/patterns", dependencies=[Reader], responses=_errors(400, 401, 403, 503), tags=["patterns"])
    def get_patterns(
        start: str | None = Query(None, description="ISO 8601, inclusive, on window_start"),
        end: str | None = Query(None, description="ISO 8601, exclusive"),
        type: str | None = Query(None, description="concept_drift, anomaly, cluster_change or freq_pattern"),
        source: str | None = Query(None, max_length=256, description="Only patterns on this stream"),
        min_confidence: float | None = Confidence,
        limit: int = Query(100, ge=1, le=config.api.max_page),
        cursor: str | None = Query(None, max_length=2000, description="next_cursor of the previous page"),
    ) -> dict[str, Any]:
        """Pattern events in (window_start, pattern_id) order, a keyset page at a time."""
        selected = query(start, end, type, source, min_confidence)
        page, next_cursor = patterns_page(runtime.store, selected, limit, cursor)
        return {
            "start": iso(selected.start),
            "end": iso(selected.end),
            "count": len(page),
            "items": [p.model_dump(mode="json") for p in page],
            "next_cursor": next_cursor,
        }

    @app.get(
        "/pattern/{pattern_id}",
        dependencies=[Reader],
        responses=_errors(400, 401, 403, 404, 503),
        tags=["patterns"],
    )
    def get_pattern(pattern_id: PatternId) -> dict[str, Any]:
        """One pattern with its context summary, rule-based card and annotations."""
        pattern = pattern_or_404(pattern_id)
        card = explain_pattern(runtime.store, config, cards, pattern, config.explain.language)
        return {
            "pattern": pattern.model_dump(mode="json"),
            "context": card.context.model_dump(mode="json"),
            "card": card.model_dump(mode="json"),
            "annotations": [a.model_dump(mode="json") for a in card.annotations],
        }

    @app.get(
        "/pattern/{pattern_id}/context",
        dependencies=[Reader],
        responses=_errors(400, 401, 403, 404, 503),
        tags=["patterns"],
    )
    def get_context(
        pattern_id: PatternId,
        limit: int = Query(500, ge=1, le=config.api.max_page),
        cursor: str | None = Query(None, max_length=2000),
    ) -> dict[str, Any]:
        """The full clean rows of a pattern's context window, a keyset page at a time."""
        pattern = pattern_or_404(pattern_id)
        start, end = context_window(pattern, config.explain.context_minutes)
        frame, next_cursor = keyset_page(
            runtime.store,
            "clean_events",
            time_column="timestamp",
            id_column="event_id",
            start=start,
            end=end,
            where=context_filters(pattern),
            limit=limit,
            cursor=cursor,
            columns=["event_id", "source", "type", "timestamp", "payload"],
        )
        rows = [{**row, "timestamp": iso(row["timestamp"])} for row in frame.iter_rows(named=True)]
        return {
            "start": iso(start),
            "end": iso(end),
            "count": len(rows),
            "rows": rows,
            "next_cursor": next_cursor,
        }

    @app.get(
        "/explain/{pattern_id}",
        dependencies=[Reader],
        responses={**_errors(400, 401, 403, 404, 503), 200: {"content": {"text/markdown": {}}}},
        tags=["patterns"],
    )
    def get_explain(
        pattern_id: PatternId,
        mode: Literal["human", "llm"] = "human",
        lang: Literal["en", "zh"] | None = None,
        format: Literal["json", "markdown"] = "json",
    ) -> Any:
        """The card: rule-based (`human`) or with an LLM-based explanation added (`llm`)."""
        pattern = pattern_or_404(pattern_id)
        card = explain_pattern(
            runtime.store, config, cards, pattern, lang or config.explain.language, mode, llm
        )
        if format == "markdown":
            return PlainTextResponse(card.markdown, media_type="text/markdown; charset=utf-8")
        return card.model_dump(mode="json")

    # -- annotations -------------------------------------------------------
    @app.get(
        "/pattern/{pattern_id}/annotations",
        dependencies=[Reader],
        responses=_errors(400, 401, 403, 404, 503),
        tags=["annotations"],
    )
    def get_annotations(pattern_id: PatternId) -> dict[str, Any]:
        pattern_or_404(pattern_id)
        return {
            "annotations": [a.model_dump(mode="json") for a in list_annotations(runtime.store, [pattern_id])]
        }

    @app.post(
        "/pattern/{pattern_id}/annotations",
        status_code=201,
        responses=_errors(400, 401, 403, 404, 503),
        tags=["annotations"],
    )
    def post_annotation(
        pattern_id: PatternId, body: AnnotationIn, actor: Annotated[str, Depends(writer)]
    ) -> dict[str, Any]:
        """Confirm a pattern, mark it a false alarm, or add a note."""
        _text(pattern_id, "pattern_id")
        try:
            annotation = add_annotation(
                runtime.store, pattern_id, body.label, body.note, body.author, actor=actor
            )
        except UnknownPattern as exc:
            raise ApiError(404, str(exc)) from None
        return annotation.model_dump(mode="json")

    @app.get(
        "/annotations/stats",
        dependencies=[Reader],
        responses=_errors(400, 401, 403, 503),
        tags=["annotations"],
    )
    def get_annotation_stats() -> dict[str, Any]:
        """Per detector: confirmed findings, false alarms, notes and precision over verdicts."""
        return {"detectors": detector_stats(runtime.store)}

    # -- replays -----------------------------------------------------------
    @app.post("/replay", status_code=202, responses=_errors(400, 401, 403, 409, 503), tags=["replay"])
    def post_replay(body: ReplayIn, actor: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        """Replay [start, end) of some sources (for debugging and CI)."""
        start, end = parse_time(body.start, "start"), parse_time(body.end, "end")
        check_range(start, end, config.api.max_range_days)
        configured = load_sources(runtime.config_path)
        known = {s.name for s in configured.sources}
        unknown = sorted(set(body.sources) - known)
        if unknown:
            raise ApiError(
                400,
                f"sources: unknown source(s) {', '.join(map(repr, unknown))} "
                f"(configured: {', '.join(sorted(known)) or 'none'})",
            )
        sources = sorted(set(body.sources)) or [s.name for s in configured.sources if s.enabled]
        if replay_launcher is None:
            raise ApiError(
                503, "replays are not available here: this API was started without a replay runner"
            )
        try:
            launched = replay_launcher.launch(start, end, sources)
        except ReplayConflict as exc:
            raise ApiError(409, str(exc)) from None
        record_audit(
            runtime.store,
            actor,
            "replay",
            ",".join(sources),
            None,
            {"start": iso(start), "end": iso(end), "sources": sources, **launched},
        )
        return {**launched, "start": iso(start), "end": iso(end), "sources": sources}

    # -- exports -----------------------------------------------------------
    @app.get(
        "/export/patterns",
        dependencies=[Reader],
        responses={**_errors(400, 401, 403, 503), 200: {"content": {"text/csv": {}, "application/json": {}}}},
        tags=["export"],
    )
    def export_patterns(
        format: Literal["csv", "json"] = "csv",
        start: str | None = Query(None, description="ISO 8601, inclusive"),
        end: str | None = Query(None, description="ISO 8601, exclusive"),
        type: str | None = None,
        source: str | None = Query(None, max_length=256),
        min_confidence: float | None = Confidence,
    ) -> StreamingResponse:
        """Every matching pattern as CSV or a JSON array, streamed."""
        selected = query(start, end, type, source, min_confidence)
        pages = iter_patterns(runtime.store, selected, config.api.max_page)
        first = next(pages, None)  # fetched now, so a store failure is still a proper error response

        def chunks() -> Iterator[str]:
            def all_pages() -> Iterator[list[PatternEvent]]:
                if first is not None:
                    yield first
                    yield from pages

            yield from export_chunks(all_pages(), format)

        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        disposition = f'attachment; filename="patterns.{format}"'
        return StreamingResponse(chunks(), media_type=media, headers={"Content-Disposition": disposition})

    mount_explorer(app, runtime)
    return app
