"""Query parameters the explorer and the REST API refuse before touching the store: 400 `{"error": ...}`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qraft_core.api.app import add_error_handlers
from qraft_core.api.explorer.routes import explorer_router
from qraft_core.api.routes.patterns import patterns_router
from qraft_core.config import QraftConfig


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
    return TestClient(app)


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/explorer/api/stream", {"stream": "a\x00b"}, "stream: control characters are not allowed"),
        ("/explorer/api/findings", {"stream": "cpu\x00"}, "stream: control characters are not allowed"),
        ("/explorer/api/findings", {"type": "\x00"}, "type: control characters are not allowed"),
        ("/explorer/api/findings", {"cursor": "a\x1bb"}, "cursor: control characters are not allowed"),
        ("/explorer/api/finding/a%00b", {}, "pattern_id: control characters are not allowed"),
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
