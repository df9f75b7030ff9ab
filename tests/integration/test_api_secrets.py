"""Passwords and keys never reach an API body, a CLI error or a log line; /docs works offline."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from qraft_cli import main
from qraft_core.api import create_app
from qraft_core.config import QraftConfig
from qraft_core.store import ClickHouseStore
from tests.integration.test_api import RuntimeStub
from tests.integration.test_api_concurrency import free_port

PASSWORD = "hunter2-Secret"
LLM_KEY = "sk-test-9f8e7d6c5b4a"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QRAFT_LLM_API_KEY", LLM_KEY)
    monkeypatch.setenv("QRAFT_API_KEY", "api-key-0123456789")
    # A port nothing listens on: every store call fails with the DSN in the driver's message.
    return f"http://qraft:{PASSWORD}@127.0.0.1:{free_port()}/qraft?password={PASSWORD}"


def test_store_errors_in_api_bodies_and_logs_carry_no_password(
    secret_env: str, config_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ClickHouseStore(secret_env)
    runtime = RuntimeStub(QraftConfig(data_dir=tmp_path), config_dir, store, tmp_path)
    client = TestClient(create_app(runtime))
    with caplog.at_level(logging.DEBUG):
        responses = [
            client.get("/patterns"),
            client.get("/explain/some-id"),
            client.get("/sources"),
            client.post(
                "/pattern/p/annotations",
                json={"label": "note"},
                headers={"X-API-Key": "api-key-0123456789"},
            ),
        ]
        logging.getLogger("qraft_core.test").warning("store %s failed, key %s", secret_env, LLM_KEY)
    for response in responses:
        assert response.status_code == 503, response.text
        body = response.json()["error"]
        assert body.startswith(
            "the store is unavailable, retry later: cannot open the store at http://qraft:***@127.0.0.1"
        )
        assert PASSWORD not in response.text and "password=***" in body
    assert PASSWORD not in caplog.text and LLM_KEY not in caplog.text
    assert "http://qraft:***@127.0.0.1" in caplog.text


def test_cli_errors_carry_no_password(
    secret_env: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRAFT_STORE_DSN", secret_env)
    result = CliRunner().invoke(main, ["--config-dir", str(config_dir), "patterns", "list"])
    assert result.exit_code == 2
    assert PASSWORD not in result.output
    assert "error: cannot open the store at http://qraft:***@127.0.0.1" in result.output


def test_swagger_ui_is_served_from_the_app_itself(
    config_dir: Path, tmp_path: Path, chdb_store: ClickHouseStore
) -> None:
    client = TestClient(
        create_app(RuntimeStub(QraftConfig(data_dir=tmp_path), config_dir, chdb_store, tmp_path))
    )
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert sorted(assets) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ]
    assert "http://" not in page.text and "https://" not in page.text.replace(
        "https://swagger.io", ""
    )
    for asset in assets:
        assert client.get(asset).status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "Qraft API"
    assert client.get("/docs/oauth2-redirect").status_code == 200
