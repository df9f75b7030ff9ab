"""Serving the API over HTTP: uvicorn, with bounds on what one client can hold.

uvicorn closes a connection idle after a response (`timeout_keep_alive`) but
never one that has not sent a whole request yet: a client that connects and
sends nothing, or a request a byte at a time, kept a file descriptor for as
long as it liked, and enough of them left none for anyone else (nor for the
store's own lock files). Nor does its httptools protocol bound the request
line and headers: a client streaming one header grew the API by megabytes.
What the protocol answers itself (not HTTP, head too long, too many
connections) is in the API's `{"error": ...}` shape, like the app's errors.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Far longer than any client on a working network needs to send a request of at most
# MAX_BODY_BYTES (qraft_core/api/app.py); far shorter than an attacker would like.
REQUEST_DEADLINE_S = 10.0
# Requests beyond this many connections or requests in flight get a 503 instead of a thread.
MAX_CONCURRENCY = 200
# The request line and headers of one request; browsers and clients send a few KiB.
MAX_HEAD_BYTES = 64 * 1024
# A body of no stated length (chunked) is parsed this much at a time, to find where the next head starts.
BODY_SLICE = 1024
_OVERLOADED = "the API is serving as many connections as it takes; retry shortly"


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """uvicorn's 503 beyond `limit_concurrency`, as JSON."""
    body = _error_body(_OVERLOADED)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose next request does not arrive whole
    (headers and body) within `deadline_s` of the connection or of the previous response, and
    answering 431 to a request whose head outgrows `MAX_HEAD_BYTES`."""

    deadline_s = REQUEST_DEADLINE_S
    # Of the request whose head is being read.
    _reading_head: bool
    _head_bytes: int
    _head_tail: bytes
    # Of the request whose body is being read: how much is left to arrive, if its head says.
    _body_left: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The limit is checked here, to answer in JSON; uvicorn's own check would answer in text.
        self._capacity, self.limit_concurrency = self.limit_concurrency, None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._requests_in = self._responses_out = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._start_head()
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # Fed to the parser a request's head, then its body, at a time, so that every head is
        # counted wherever in a read it starts, and before it is parsed: httptools buffers a header
        # until it ends. A websocket upgrade hands the connection to another protocol.
        while data and self.transport.get_protocol() is self and not self.transport.is_closing():
            if not self._reading_head:
                data = self._feed_body(data)
                continue
            size = self._count_head(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                             f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
                return
            super().data_received(data[:size])
            data = data[size:]

    def _count_head(self, data: bytes) -> int:
        """How much of `data` is the head being read, up to the blank line that ends it (which may
        straddle two reads: hence the tail); counts it, but not the line ends the parser skips
        before a request line."""
        start = len(data) - len(data.lstrip(b"\r\n")) if not self._head_bytes else 0
        seen = self._head_tail + data[start:]
        end = seen.find(b"\r\n\r\n")
        size = len(data) if end < 0 else start + end + 4 - len(self._head_tail)
        self._head_bytes += size - start
        self._head_tail = seen[-3:]
        return size

    def _feed_body(self, data: bytes) -> bytes:
        """Feeds the part of `data` that is the body being read; returns the rest. A body of stated
        length is fed whole. Where one of no stated length (chunked) ends, only parsing finds out:
        it goes in slices, and all of the slice it ends in counts as the next head (over by less
        than a slice, never under)."""
        if self._body_left:
            piece = data[:self._body_left]
            self._body_left -= len(piece)
            super().data_received(piece)
            return data[len(piece):]
        piece = data[:BODY_SLICE]
        super().data_received(piece)
        if self._reading_head:
            self._head_bytes += len(piece)
            self._head_tail = piece[-3:]
        else:  # this body goes on, or the slice held a new head and part of its body (how much: unknown)
            self._body_left = None
        return data[len(piece):]

    def send_400_response(self, msg: str) -> None:
        self._refuse(HTTPStatus.BAD_REQUEST, f"invalid HTTP request: {msg}")

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer `status` with `{"error": message}` and close, before any app is involved."""
        body = _error_body(message)
        head = (f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _start_head(self) -> None:
        self._reading_head, self._head_bytes, self._head_tail = True, 0, b""

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._requests_in += 1
        self._start_head()
        self._settle()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        lengths = [value for name, value in self.headers if name == b"content-length"]
        chunked = any(name == b"transfer-encoding" for name, _ in self.headers)
        self._body_left = int(lengths[0]) if len(lengths) == 1 and lengths[0].isdigit() and not chunked else None
        if self._capacity is None or (len(self.connections) < self._capacity and len(self.tasks) < self._capacity):
            super().on_headers_complete()
            return
        app, self.app = self.app, _overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._responses_out += 1
        self._settle()

    def _settle(self) -> None:
        """No deadline while a whole request waits for its response; else the next one has one (a
        response may also go out before its request has arrived whole, e.g. a 413)."""
        if self._requests_in > self._responses_out:
            self._disarm()
        else:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.deadline_s, self.transport.close)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


# What `qraft api` passes to uvicorn besides the app, host and port.
SERVER_SETTINGS: dict[str, Any] = {"http": RequestDeadline, "limit_concurrency": MAX_CONCURRENCY}
