"""A live source's secrets are masked in every form a log line may quote them: as they are,
escaped, and URL-encoded (in a URL echoed by a server or logged by the HTTP client)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.adapters.rest import RestAdapter
from qraft_core.config import SourceConfig
from qraft_core.redact import install_redaction, redact

# The variable's name does not say it is a secret: only the source's `credentials` do.
SECRET = "s3cr3t+key/with=chars é"


def rest_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RestAdapter:
    monkeypatch.setenv("QRAFT_TEST_PROBE", SECRET)
    source = SourceConfig(name="r", type="rest", endpoint="http://h/api/{tok}/data",
                          credentials={"tok": "QRAFT_TEST_PROBE"}, options={"params": {"apikey": "{tok}"}})
    adapter = build_adapter(source, tmp_path)
    assert isinstance(adapter, RestAdapter)
    return adapter


@pytest.mark.parametrize("form", [
    SECRET,
    quote(SECRET, safe=""),
    quote(SECRET),  # "/" left as it is
    quote_plus(SECRET),
    quote(SECRET, safe="").lower(),
    repr(SECRET.encode())[2:-1],
])
def test_a_secret_is_masked_in_its_url_encoded_and_escaped_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    adapter = rest_adapter(tmp_path, monkeypatch)
    location = f"https://example.com/api/{form}/data?auth={form}"
    assert adapter.masked(location) == "https://example.com/api/***/data?auth=***"
    assert redact(location) == "https://example.com/api/***/data?auth=***"


def test_the_http_clients_request_line_does_not_show_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_redaction()
    adapter = rest_adapter(tmp_path, monkeypatch)

    async def request() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200))
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(adapter.endpoint, params=adapter.params)

    with caplog.at_level(logging.INFO, logger="httpx"):
        asyncio.run(request())
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == [
        'HTTP Request: GET http://h/api/***/data?apikey=*** "HTTP/1.1 200 OK"'
    ]
