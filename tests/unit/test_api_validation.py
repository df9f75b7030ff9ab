"""Query parameters the explorer and the REST API refuse before touching the store (400 `{"error": ...}`),
and the stream names they accept: every name the pipeline makes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qraft_core.api import create_app
from qraft_core.api.app import add_error_handlers
from qraft_core.api.explorer.routes import explorer_router
from qraft_core.api.routes.annotations import annotations_router
from qraft_core.api.routes.patterns import patterns_router
from qraft_core.config import QraftConfig
from qraft_core.operators.pipeline import SourcePipeline
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]


class UntouchedStore:
    """A bad parameter is refused before any query: touching the store fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name}) for a request that should be refused")


@pytest.fixture
def client() -> TestClient:
    config = QraftConfig()
    runtime = SimpleNamespace(config=config, store=UntouchedStore(), data_dir="/nonexistent")
    api = SimpleNamespace(config=config, dependencies=lambda: (lambda: None, lambda: "actor"))
    app = FastAPI()
    add_error_handlers(app)
    app.include_router(explorer_router(runtime))
    app.include_router(patterns_router(api))  # type: ignore[arg-type]
    app.include_router(annotations_router(api))  # type: ignore[arg-type]
    return TestClient(app)


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/explorer/api/stream", {"stream": "a\x00b"}, "stream: control characters are not allowed"),
        ("/explorer/api/findings", {"stream": "cpu\x00"}, "stream: control characters are not allowed"),
        ("/explorer/api/findings", {"type": "\x00"}, "type: control characters are not allowed"),
        ("/explorer/api/findings", {"cursor": "a\x1bb"}, "cursor: control characters are not allowed"),
        ("/explorer/api/finding/a%00b", {}, "pattern_id: control characters are not allowed"),
        ("/explorer/api/stream", {"stream": "s", "start": "garbage"}, "start: 'garbage' is not an ISO 8601 time"),
        ("/explorer/api/stream", {"stream": "s", "end": "garbage"}, "end: 'garbage' is not an ISO 8601 time"),
        ("/explorer/api/stream", {"stream": "s", "start": "2026-01-05", "end": "nope"}, "end: 'nope' is not"),
        ("/explorer/api/findings", {"min_confidence": "nan"}, "query.min_confidence: Input should be a finite number"),
        ("/explorer/api/findings", {"min_confidence": "inf"}, "query.min_confidence: Input should be a finite number"),
        ("/explorer/api/findings", {"min_confidence": "2"}, "query.min_confidence: Input should be less than or equal"),
        ("/patterns", {"min_confidence": "nan"}, "query.min_confidence: Input should be a finite number"),
        ("/patterns", {"min_confidence": "-inf"}, "query.min_confidence: Input should be a finite number"),
    ],
)
def test_bad_parameters_are_400_with_a_message(client: TestClient, path: str, params: dict[str, str],
                                               message: str) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert list(response.json()) == ["error"]
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize("query", ["type=concept_drift&type=anomaly", "type=bogus&type=anomaly", "limit=5&limit=5"])
def test_a_parameter_given_twice_is_refused_naming_it(client: TestClient, query: str) -> None:
    # Before, the last value was taken and the others silently dropped (or not even checked).
    response = client.get(f"/patterns?{query}")
    name = query.split("=")[0]
    assert (response.status_code, response.json()) == (400, {"error": f"{name}: given 2 times; give it once"})


@pytest.mark.parametrize("media_type", ["text/json", "text/plain", "application/octet-stream", "json/text"])
def test_a_json_body_sent_as_another_media_type_is_refused_naming_it(client: TestClient, media_type: str) -> None:
    # Before, `text/json` (a JSON subtype under another main type, which FastAPI does not parse) got
    # "Input should be a valid dictionary or object to extract fields from".
    response = client.post("/pattern/p1/annotations", content=b'{"label": "note"}',
                           headers={"content-type": media_type})
    assert (response.status_code, response.json()) == (
        400, {"error": f"body: must be JSON sent with Content-Type: application/json (got {media_type!r})"})


def test_every_stream_the_splitter_makes_is_accepted_as_a_filter(memory_store: MemoryStore, tmp_path: Path) -> None:
    # Keys with control characters or over 256 characters: their streams got findings the API then refused.
    keys = ["web\x1b]0;pwned\x07\x1b[2J", "x\n- **Forged:**", "tab\there", "L" * 10_240, "L" * 10_239 + "M"]
    pipeline = SourcePipeline(source="hosts", stream_key="host", operators=["aggregate"])
    events = pl.DataFrame({"payload": [f'{{"host": {json.dumps(key)}}}' for key in keys]})
    names = events.select(pipeline.stream_expr().alias("stream"))["stream"].to_list()
    assert len(set(names)) == len(keys)
    drift = example_patterns()[0]
    memory_store.insert("pattern_events", pattern_rows([
        drift.model_copy(update={"pattern_id": f"p{i}", "source_streams": [name]}) for i, name in enumerate(names)]))
    runtime = SimpleNamespace(config=QraftConfig(), config_path=REPO / "config", store=memory_store, data_dir=tmp_path)
    client = TestClient(create_app(runtime))  # type: ignore[arg-type]
    day = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}
    for i, name in enumerate(names):
        found = {
            "patterns": client.get("/patterns", params={**day, "source": name}),
            "inbox": client.get("/explorer/api/findings", params={**day, "stream": name}),
            "stream": client.get("/explorer/api/stream", params={**day, "stream": name}),
        }
        assert {where: response.status_code for where, response in found.items()} == dict.fromkeys(found, 200)
        assert [p["pattern_id"] for p in found["patterns"].json()["items"]] == [f"p{i}"]
        assert [p["pattern_id"] for p in found["inbox"].json()["items"]] == [f"p{i}"]
        assert [p["pattern_id"] for p in found["stream"].json()["findings"]] == [f"p{i}"]


@pytest.mark.parametrize(
    ("params", "window"),
    [
        ({"start": "2026-01-05T10:00:00Z"}, ("2026-01-05T10:00:00.000Z", "2026-01-05T13:00:00.000Z")),
        ({"end": "2026-01-05T10:00:00Z"}, ("2026-01-05T07:00:00.000Z", "2026-01-05T10:00:00.000Z")),
        ({"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T09:30:00Z"},
         ("2026-01-05T09:00:00.000Z", "2026-01-05T09:30:00.000Z")),
    ],
)
def test_a_stream_range_with_one_bound_spans_three_hours_from_it(memory_store: MemoryStore,
                                                                  params: dict[str, str],
                                                                  window: tuple[str, str]) -> None:
    # A lone bound was silently dropped for the stream's newest three hours.
    config = QraftConfig()
    app = FastAPI()
    add_error_handlers(app)
    app.include_router(explorer_router(SimpleNamespace(config=config, store=memory_store, data_dir="/nonexistent")))
    body = TestClient(app).get("/explorer/api/stream", params={"stream": "s", **params}).json()
    assert (body["start"], body["end"]) == window
