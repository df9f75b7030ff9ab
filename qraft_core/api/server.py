"""Serving the API over HTTP: uvicorn, with bounds on what one client can hold.

uvicorn closes a connection idle after a response (`timeout_keep_alive`) but
never one that has not sent a whole request yet: a client that connects and
sends nothing, or a request a byte at a time, kept a file descriptor for as
long as it liked, and enough of them left none for anyone else (nor for the
store's own lock files).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Far longer than any client on a working network needs to send a request of at most
# MAX_BODY_BYTES (qraft_core/api/app.py); far shorter than an attacker would like.
REQUEST_DEADLINE_S = 10.0
# Requests beyond this many connections or requests in flight get a 503 instead of a thread.
MAX_CONCURRENCY = 200


class RequestDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose next request does not arrive whole
    (headers and body) within `deadline_s` of the connection or of the previous response."""

    deadline_s = REQUEST_DEADLINE_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._requests_in = self._responses_out = 0
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._requests_in += 1
        self._settle()

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
