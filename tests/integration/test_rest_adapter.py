"""The REST poller against a real local HTTP server that is slow, limited, failing and repetitive."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters.registry import build_adapter, validate_source
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import ConfigError, SourceConfig


def quotes(*ids: int) -> bytes:
    # Seconds, milliseconds and microseconds: the parser tells them apart by magnitude.
    times = {1: 1767571200, 2: 1767571201000, 3: 1767571202000000}
    return json.dumps({"data": [{"id": i, "px": {"value": 100 + i}, "time": times[i]} for i in ids]}).encode()


class Scripted:
    """Answers requests from a list of (status, headers, body, delay_s); then 304 forever."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes, float]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[float, dict[str, str]]] = []
        self.sent: list[tuple[str, str, bytes]] = []  # method, path and query, body of each request
        self.lock = threading.Lock()

    def next(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            self.requests.append((time.monotonic(), headers))
            return self.script.pop(0) if self.script else (304, {}, b"", 0.0)


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[Scripted]]]:
    holder: list[Scripted] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            holder[0].sent.append((self.command, self.path, sent))
            status, headers, body, delay = holder[0].next(dict(self.headers))
            time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up on a slow answer

        do_POST = do_GET  # noqa: N815 - the http.server API

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/quotes", holder
    server.shutdown()
    server.server_close()


def rest_source(url: str, **extra: Any) -> SourceConfig:
    options = {"interval_s": 0.05, "records": "$.data[*]", "timeout_s": 1.5, "max_retries": 3,
               "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "id_field": "id", "time_field": "ts",
               "event_type": "quote", "fields": {"id": "$.id", "price": "$.px.value", "ts": "time"},
               "headers": {"Authorization": "Bearer {token}"}}
    options.update(extra.pop("options", {}))
    return SourceConfig(name="quotes", type="rest", endpoint=url, options=options,
                        credentials={"token": "QRAFT_TEST_QUOTES_TOKEN"}, **extra)


async def run_until(adapter: Any, bus: MemoryBus, scripted: Scripted, requests: int,
                    handled: Callable[[Any], bool] = lambda adapter: True) -> Any:
    """Run until the server saw `requests` requests and `handled(adapter)` (a stop cancels a request
    in flight, so a test of what the adapter made of the last answer waits for it)."""
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(bus, stop))
    for _ in range(2400):
        if (len(scripted.requests) >= requests and handled(adapter)) or task.done():
            break
        await asyncio.sleep(0.005)
    stop.set()
    return await asyncio.wait_for(task, 10)


def published(bus: MemoryBus) -> tuple[list[dict], list[dict]]:
    return bus.published()


def test_poller_retries_honours_retry_after_skips_unchanged_and_dead_letters_bad_json(
    http_server: tuple[str, list[Scripted]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, holder = http_server
    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "s3cret")
    scripted = Scripted([
        (500, {}, b"boom", 0.0),
        (429, {"Retry-After": "1"}, b"", 0.0),
        (200, {}, quotes(1), 3.0),  # slower than timeout_s: abandoned
        (200, {"ETag": '"v1"', "Last-Modified": "Mon, 05 Jan 2026 00:00:00 GMT"}, quotes(1, 2), 0.0),
        (304, {}, b"", 0.0),
        (200, {"ETag": '"v2"'}, quotes(1, 2), 0.0),  # same body as before: nothing new
        (200, {}, b'{"data": [', 0.0),
        (200, {}, quotes(1, 2, 3), 0.0),
    ])
    holder.append(scripted)
    bus = MemoryBus()
    adapter = build_adapter(rest_source(url), tmp_path)
    stats = asyncio.run(run_until(adapter, bus, scripted, requests=9))

    events, letters = published(bus)
    first = [("quotes:1", 101, "2026-01-05T00:00:00Z"), ("quotes:2", 102, "2026-01-05T00:00:01Z")]
    # The changed body republishes quotes 1 and 2 under the same ids; landing keeps one row each.
    assert [(e["event_id"], e["payload"]["price"], e["timestamp"]) for e in events] == [
        *first, *first, ("quotes:3", 103, "2026-01-05T00:00:02Z"),
    ]
    assert len(letters) == 1 and letters[0]["reason"].startswith("response is not JSON")
    assert letters[0]["raw"] == '{"data": ['
    times = [at for at, _ in scripted.requests]
    assert times[2] - times[1] >= 1.0  # Retry-After: 1 was honoured
    headers = [h for _, h in scripted.requests]
    assert all(h["Authorization"] == "Bearer s3cret" for h in headers)
    assert headers[4].get("If-None-Match") == '"v1"' and "If-None-Match" not in headers[0]
    assert headers[4].get("If-Modified-Since") == "Mon, 05 Jan 2026 00:00:00 GMT"
    assert stats.extra["unchanged"] >= 2
    assert stats.errors == 3  # the 500, the 429 and the timeout


def test_poller_keeps_to_the_source_rate_limit(http_server: tuple[str, list[Scripted]], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, holder = http_server
    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "x")
    scripted = Scripted([])
    holder.append(scripted)
    adapter = build_adapter(rest_source(url, rate_limit_per_s=10, options={"interval_s": 0.001}), tmp_path)
    asyncio.run(run_until(adapter, MemoryBus(), scripted, requests=6))
    times = [at for at, _ in scripted.requests]
    assert len(times) >= 6
    # Measured at the server, so single gaps jitter; without the limit they would be ~1 ms.
    assert all(b - a >= 0.05 for a, b in zip(times, times[1:], strict=False))
    assert (times[-1] - times[0]) / (len(times) - 1) >= 0.09


def test_a_secret_ending_in_a_newline_is_sent_stripped_and_one_holding_a_control_character_is_a_config_error(
    http_server: tuple[str, list[Scripted]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, holder = http_server
    scripted = Scripted([(200, {}, quotes(1), 0.0)])
    holder.append(scripted)
    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "k-SECRET-999\n")
    source = rest_source(url, options={"headers": {"X-Api-Key": "{token}"}})
    bus = MemoryBus()
    with caplog.at_level(logging.DEBUG):
        stats = asyncio.run(run_until(build_adapter(source, tmp_path), bus, scripted, requests=2))
    assert [h["X-Api-Key"] for _, h in scripted.requests[:2]] == ["k-SECRET-999", "k-SECRET-999"]
    assert [e["event_id"] for e in bus.published()[0]] == ["quotes:1"]
    assert stats.errors == 0 and "SECRET" not in caplog.text

    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "k-SECRET-999\r\nX-Evil: 1")
    with pytest.raises(ConfigError) as raised:
        build_adapter(source, tmp_path)
    assert str(raised.value) == ("source quotes: credentials.token: expected printable ASCII for a header value "
                                 "(it holds a control or non-ASCII character)")


def test_placeholders_in_params_and_body_are_filled_from_credentials(
    http_server: tuple[str, list[Scripted]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, holder = http_server
    scripted = Scripted([(200, {}, quotes(1), 0.0)])
    holder.append(scripted)
    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "real key/1")
    source = rest_source(url, options={"method": "POST", "params": {"api_key": "{token}", "n": 5},
                                       "body": {"auth": {"key": "{token}", "scopes": ["read:{token}", 1]}}})
    asyncio.run(run_until(build_adapter(source, tmp_path), MemoryBus(), scripted, requests=1))
    method, path, body = scripted.sent[0]
    assert (method, path) == ("POST", "/quotes?api_key=real+key%2F1&n=5")
    assert json.loads(body) == {"auth": {"key": "real key/1", "scopes": ["read:real key/1", 1]}}


@pytest.mark.parametrize(("options", "error"), [
    ({"params": {"api_key": "{key}"}},
     "sources.yaml: sources[0].options.params.api_key: placeholder {key} is not declared in credentials"),
    ({"method": "POST", "body": {"auth": {"scopes": ["a", "{key}"]}}},
     "sources.yaml: sources[0].options.body.auth.scopes[1]: placeholder {key} is not declared in credentials"),
    ({"headers": {"X-Tag": "caf\u00e9"}},
     "sources.yaml: sources[0].options.headers.X-Tag: expected printable ASCII for a header value "
     "(it holds a control or non-ASCII character)"),
])
def test_config_validate_names_an_undeclared_placeholder_in_params_or_body_and_a_bad_header(options, error):
    source = SourceConfig(name="r", type="rest", endpoint="https://api.example.com/v1", options=options)
    with pytest.raises(ConfigError) as raised:
        validate_source(source, "sources.yaml: sources[0]")
    assert str(raised.value) == error


@pytest.mark.parametrize(("kind", "endpoint", "problem"), [
    ("rest", "http://127.0.0.1:99999/feed", "an http:// or https:// URL with a port in 1-65535"),
    ("rest", "http://127.0.0.1:0/feed", "an http:// or https:// URL with a port in 1-65535"),
    ("rest", "http://[::1/feed", "an http:// or https:// URL (Invalid IPv6 URL;"),
    ("rest", "http://exa mple.com/feed", "an http:// or https:// URL with a host name"),
    ("rest", "https://", "an http:// or https:// URL with a host name"),
    ("websocket", "ws://127.0.0.1:99999/x", "a ws:// or wss:// URL with a port in 1-65535"),
    ("websocket", "wss://:443/x", "a ws:// or wss:// URL with a host name"),
])
def test_config_validate_refuses_an_endpoint_that_is_not_a_usable_url(kind, endpoint, problem):
    source = SourceConfig(name="r", type=kind, endpoint=endpoint)
    with pytest.raises(ConfigError) as raised:
        validate_source(source, "sources.yaml: sources[0]")
    assert str(raised.value).startswith(f"sources.yaml: sources[0].endpoint: expected {problem}")
    assert str(raised.value).endswith(f"got {endpoint!r})")


@pytest.mark.parametrize(("kind", "endpoint"), [
    ("rest", "https://api.example.com:8443/v1/{token}/rates"),
    ("rest", "http://[::1]:8080/feed"),
    ("websocket", "wss://stream.example.com:9443/ws/{token}"),
])
def test_config_validate_accepts_urls_with_placeholders_and_ipv6_hosts(kind, endpoint):
    source = SourceConfig(name="r", type=kind, endpoint=endpoint, credentials={"token": "T"})
    validate_source(source, "sources.yaml: sources[0]")


def test_a_secret_echoed_by_the_server_is_masked_in_the_warning(
    http_server: tuple[str, list[Scripted]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, holder = http_server
    scripted = Scripted([(401, {}, b'unknown key "k-SECRET\\\\999" (k-SECRET\\999)', 0.0)])
    holder.append(scripted)
    monkeypatch.setenv("QRAFT_TEST_QUOTES_TOKEN", "k-SECRET\\999")
    with caplog.at_level(logging.WARNING):
        stats = asyncio.run(run_until(build_adapter(rest_source(url), tmp_path), MemoryBus(), scripted, requests=1,
                                      handled=lambda adapter: adapter.stats.errors > 0))
    assert stats.errors == 1
    assert [r.getMessage() for r in caplog.records] == ['source quotes: HTTP 401: unknown key "***" (***); not retried']
