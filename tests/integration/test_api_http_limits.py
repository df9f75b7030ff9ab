"""What the HTTP layer refuses before the app: over-long heads (431), requests that are not HTTP
(400) and connections beyond the limit (503), every one in the API's `{"error": ...}` shape."""

from __future__ import annotations

import json
import re
import socket

from qraft_core.api.app import MAX_BODY_BYTES
from qraft_core.api.server import MAX_HEAD_BYTES, SERVER_SETTINGS
from tests.integration import test_api
from tests.integration.test_api import RuntimeStub
from tests.integration.test_api_concurrency import serving

runtime = test_api.runtime


def answer_to(port: int, request: bytes) -> bytes:
    """Send `request` in one write on a fresh connection; everything answered, read to its close."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(20)
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """The status and JSON body of the answer to `request`."""
    head, _, body = answer_to(port, request).partition(b"\r\n\r\n")
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
        # A body arriving with its head counts against the body's limit, not the head's: head and
        # body together are over MAX_HEAD_BYTES, the body alone within MAX_BODY_BYTES.
        body_bytes = b"{" + b" " * (MAX_BODY_BYTES - 38) + b"}"
        post = (b"POST /replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body_bytes)).encode() + b"\r\nConnection: close\r\n\r\n" + body_bytes)
        assert exchange(port, post)[0] != 431


def statuses(port: int, request: bytes) -> list[int]:
    """The status of every answer to `request`."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer_to(port, request))]


def test_a_head_is_counted_wherever_in_a_read_it_starts(runtime: RuntimeStub) -> None:
    # Before, counting stopped at the first blank line of a read: a long head after line ends the
    # parser skips, or after a whole request in the same read, was served.
    stats = b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\n"
    big = stats + b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 1024) + b"\r\nConnection: close\r\n\r\n"
    post = b"POST /replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    chunked = b"POST /replay HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    with serving(runtime, **SERVER_SETTINGS) as port:
        assert statuses(port, b"\r\n" * 8 + big) == [431]
        for first in (stats + b"\r\n", post, chunked, chunked + post):
            answered = statuses(port, first + big)
            assert answered[-1] == 431 and len(answered) <= 2, first
        # Within the limit, every request of the read is served.
        fine = stats + b"X-Fine: " + b"a" * 60_000 + b"\r\nConnection: close\r\n\r\n"
        assert statuses(port, b"\r\n" + stats + b"\r\n" + post + chunked + post + fine) == [200, 401, 401, 401, 200]


def test_a_request_that_is_not_http_is_400_in_the_error_shape(runtime: RuntimeStub) -> None:
    with serving(runtime, **SERVER_SETTINGS) as port:
        status, body = exchange(port, b"GET /" + b"\x01" * 10 + b" HTTP/1.1\r\n\r\n")
    assert status == 400 and body["error"].startswith("invalid HTTP request")


def test_a_connection_over_the_limit_is_503_in_the_error_shape(runtime: RuntimeStub) -> None:
    with serving(runtime, **{**SERVER_SETTINGS, "limit_concurrency": 2}) as port, \
            socket.create_connection(("127.0.0.1", port)) as _idle:
        status, body = exchange(port, b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503 and "connections" in body["error"]
