"""What the HTTP layer refuses before the app: over-long heads (431), requests that are not HTTP
(400) and connections beyond the limit (503), every one in the API's `{"error": ...}` shape."""

from __future__ import annotations

import json
import socket

from qraft_core.api.server import MAX_HEAD_BYTES, SERVER_SETTINGS
from tests.integration import test_api
from tests.integration.test_api import RuntimeStub
from tests.integration.test_api_concurrency import serving

runtime = test_api.runtime


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send `request` on a fresh connection; the status and JSON body of the answer, read to its close."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(20)
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), json.loads(body)


def test_a_head_over_the_limit_is_431_and_one_within_it_is_served(runtime: RuntimeStub) -> None:
    # Before, a 1 MB header was served, and clients streaming header bytes grew the API by MBs each.
    big = b"a" * (MAX_HEAD_BYTES + 1024)
    with serving(runtime, **SERVER_SETTINGS) as port:
        status, body = exchange(port, b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        assert status == 431 and "headers are over" in body["error"]
        # A header still arriving is refused as soon as it passes the limit, not when it ends.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(20)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Stream: " + big)
            assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
        fine = b"a" * 8000
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\nX-Fine: " + fine + b"\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
        # A body arriving with its head counts against the body's limit, not the head's.
        body_bytes = b"{" + b" " * 60_000 + b"}"
        post = (b"POST /replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body_bytes)).encode() + b"\r\nConnection: close\r\n\r\n" + body_bytes)
        assert exchange(port, post)[0] != 431


def test_a_request_that_is_not_http_is_400_in_the_error_shape(runtime: RuntimeStub) -> None:
    with serving(runtime, **SERVER_SETTINGS) as port:
        status, body = exchange(port, b"GET /" + b"\x01" * 10 + b" HTTP/1.1\r\n\r\n")
    assert status == 400 and body["error"].startswith("invalid HTTP request")


def test_a_connection_over_the_limit_is_503_in_the_error_shape(runtime: RuntimeStub) -> None:
    with serving(runtime, **{**SERVER_SETTINGS, "limit_concurrency": 2}) as port, \
            socket.create_connection(("127.0.0.1", port)) as _idle:
        status, body = exchange(port, b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503 and "connections" in body["error"]
