"""REST polling: fetch a JSON document every interval and publish the records in it.

Records are picked with a small JSONPath subset (`$.data[*]`) and mapped
field by field (`fields: {price: $.p}`). Conditional requests (ETag,
Last-Modified) and a hash of the last body skip unchanged responses; 429
and 5xx honour Retry-After; timeouts (of the whole response, so a server
dripping bytes cannot hold a poll), transport errors and 5xx are retried with
backoff. A body that is not JSON, larger than `max_body_bytes` (after
decompression), undecodable, or without records where `records` points
becomes a dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from qraft_core.adapters.base import AdapterStats, register_adapter
from qraft_core.adapters.live import (
    Backoff,
    LiveAdapter,
    NetworkOptions,
    RateLimiter,
    sleep_or_stop,
    ssl_context,
)
from qraft_core.adapters.parsers import raw_json
from qraft_core.bus.base import Publisher
from qraft_core.events import MAX_DEAD_LETTER_RAW, StandardEvent, safe_text

_STEP = re.compile(r"\.([A-Za-z_][\w\-]*)|\.\*|\[(\*|-?\d+|'[^']*'|\"[^\"]*\")\]")
Step = str | int | None  # a key, an index, or None for every element


def compile_path(expression: str) -> tuple[Step, ...]:
    """The steps of a JSONPath subset: `$`, `.key`, `['key']`, `[n]`, `[*]`, `.*`.

    A path without the leading `$` is taken relative to the record (`a.b` = `$.a.b`).

    >>> compile_path("$.data[*].price")
    ('data', None, 'price')
    >>> compile_path("result['last trade'][0]")
    ('result', 'last trade', 0)
    >>> compile_path("$.a..b")
    Traceback (most recent call last):
    ...
    ValueError: path '$.a..b': cannot read '..b' (supported: $, .key, ['key'], [n], [*], .*)
    """
    text = expression.strip()
    rest = text[1:] if text.startswith("$") else ("." + text if text and text[0] != "[" else text)
    steps: list[Step] = []
    position = 0
    while position < len(rest):
        match = _STEP.match(rest, position)
        if match is None:
            raise ValueError(
                f"path {expression!r}: cannot read {rest[position:]!r} "
                "(supported: $, .key, ['key'], [n], [*], .*)"
            )
        key, bracket = match.group(1), match.group(2)
        if key is not None:
            steps.append(key)
        elif bracket is None or bracket == "*":
            steps.append(None)
        elif bracket[0] in "'\"":
            steps.append(bracket[1:-1])
        else:
            steps.append(int(bracket))
        position = match.end()
    return tuple(steps)


def _step(values: list[Any], step: Step) -> list[Any]:
    reached: list[Any] = []
    for value in values:
        if step is None:
            if isinstance(value, list):
                reached.extend(value)
            elif isinstance(value, dict):
                reached.extend(value.values())
        elif isinstance(step, int):
            if isinstance(value, list) and -len(value) <= step < len(value):
                reached.append(value[step])
        elif isinstance(value, dict) and step in value:
            reached.append(value[step])
    return reached


def select(document: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Every value the path reaches; missing keys and indexes reach nothing.

    >>> select({"data": [{"p": 1}, {"p": 2}, {}]}, compile_path("$.data[*].p"))
    [1, 2]
    """
    current = [document]
    for step in steps:
        current = _step(current, step)
    return current


def _step_text(step: Step) -> str:
    return "[*]" if step is None else f"[{step}]" if isinstance(step, int) else f".{step}"


def missing_at(document: Any, steps: tuple[Step, ...]) -> str | None:
    """Why the path reaches nothing in `document`, or None when it reaches only empty lists or objects
    (a response with no records is not an error; one shaped otherwise than the path says is).

    >>> missing_at({"data": []}, compile_path("$.data[*]")) is None
    True
    >>> missing_at({"error": "down"}, compile_path("$.data[*]"))
    'no $.data (found an object with keys: error)'
    >>> missing_at(42, compile_path("$.data[*]"))
    'no $.data (found int)'
    """
    current = [document]
    for position, step in enumerate(steps):
        reached = _step(current, step)
        if not reached:
            if step is None and any(isinstance(value, (list, dict)) for value in current):
                return None
            found = current[0]
            shape = (f"an object with keys: {', '.join(map(str, list(found)[:5]))}" if isinstance(found, dict)
                     else type(found).__name__)
            return f"no ${''.join(map(_step_text, steps[: position + 1]))} (found {safe_text(shape, 200)})"
        current = reached
    return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date.

    >>> retry_after_seconds("3")
    3.0
    >>> retry_after_seconds("Mon, 05 Jan 2026 00:00:10 GMT", datetime(2026, 1, 5, tzinfo=UTC))
    10.0
    >>> retry_after_seconds("soon") is None
    True
    >>> retry_after_seconds("nan") is None
    True
    >>> retry_after_seconds("Mon, 05 Jan 2026 00:00:10 -0000", datetime(2026, 1, 5, tzinfo=UTC))
    10.0
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # A date in "-0000" (no zone) is read without one; HTTP dates are GMT.
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class RestOptions(NetworkOptions):
    interval_s: float = Field(default=10.0, gt=0)
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # JSON body for POST requests.
    body: dict[str, Any] | None = None
    # Where the records are in the response; a list reached is read item by item.
    records: str = "$"
    # Output field → path inside one record; empty keeps the record as it is.
    fields: dict[str, str] = Field(default_factory=dict)
    # The whole request, headers and body: a server sending a byte now and then cannot hold a poll.
    timeout_s: float = Field(default=10.0, gt=0)
    # A response body (decompressed) larger than this is not read further: a dead letter.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_retries: int = Field(default=3, ge=0, le=20)
    # A Retry-After longer than this is cut to it.
    retry_after_max_s: float = Field(default=300.0, gt=0)
    # Send If-None-Match / If-Modified-Since from the previous response.
    conditional: bool = True

    @field_validator("records")
    @classmethod
    def _records_path(cls, value: str) -> str:
        compile_path(value)
        return value

    @field_validator("fields")
    @classmethod
    def _field_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            compile_path(path)
        return value


class _GiveUp(Exception):
    """This poll has failed for good; the next interval tries again."""


class _BadBody(Exception):
    """A response whose body cannot be read (oversize, undecodable): a dead letter, not a retry."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason, self.raw = reason, raw


@register_adapter
class RestAdapter(LiveAdapter):
    """Polls an HTTP(S) JSON `endpoint`.

    >>> RestAdapter.options_model.model_validate({"records": "$.data[*]"}).interval_s
    10.0
    """

    type_name: ClassVar[str] = "rest"
    endpoint_prefixes: ClassVar[tuple[str, ...]] = ("http://", "https://")
    endpoint_expected: ClassVar[str] = "an http:// or https:// URL"
    options_model: ClassVar[type[RestOptions]] = RestOptions  # type: ignore[assignment]
    options: RestOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        self.limiter = RateLimiter(self.source.rate_limit_per_s)
        self.records_path = compile_path(self.options.records)
        self.field_paths = {name: compile_path(path) for name, path in self.options.fields.items()}
        self.validators: dict[str, str] = {}
        self.last_body_hash = ""
        self.stats.extra.update(requests=0, unchanged=0)

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats:
        async with httpx.AsyncClient(
            verify=ssl_context(self.options) if self.endpoint.startswith("https://") else True,
            timeout=httpx.Timeout(self.options.timeout_s),
            headers=self.headers,
            trust_env=False,
        ) as client:
            while not stop.is_set():
                try:
                    body = await self._fetch(client, stop)
                except _GiveUp:
                    body = None
                except _BadBody as bad:
                    body = None
                    if self._changed(bad.raw + bad.reason.encode()):
                        await self.publish(publisher, [], [(bad.reason, bad.raw)])
                if body is not None:
                    await self._publish_body(publisher, body)
                if await sleep_or_stop(stop, self.options.interval_s):
                    break
        return self.stats

    async def _fetch(self, client: httpx.AsyncClient, stop: asyncio.Event) -> bytes | None:
        """The body of a changed 200 response, None when unchanged; _GiveUp after the retries."""
        for attempt in range(self.options.max_retries + 1):
            await self.limiter.acquire()
            self.stats.extra["requests"] += 1
            wait: float | None = None
            try:
                async with asyncio.timeout(self.options.timeout_s):
                    status, headers, body = await self._request(client)
            except (httpx.TimeoutException, TimeoutError) as exc:
                self.error("timeout", "request timed out after %ss (%s)", self.options.timeout_s,
                           type(exc).__name__)
            except httpx.TransportError as exc:
                self.error("connect", "request failed: %s: %s", type(exc).__name__, exc)
            else:
                if status == 304:
                    self.stats.extra["unchanged"] += 1
                    return None
                if status < 300:
                    self.backoff.reset()
                    self._remember_validators(headers)
                    return body
                if status == 429 or status >= 500:
                    wait = retry_after_seconds(headers.get("Retry-After"))
                    wait = None if wait is None else min(wait, self.options.retry_after_max_s)
                    kind = "rate_limited" if status == 429 else "http"
                    self.error(kind, "HTTP %s; retrying after %s", status,
                               "backoff" if wait is None else f"{wait:.2f}s (Retry-After)")
                elif 300 <= status < 400:
                    # Not followed: a redirect loop costs nothing, and the endpoint to configure is named.
                    self.error("http", "HTTP %s redirect to %s not followed (set the endpoint to it); not retried",
                               status, safe_text(headers.get("Location", "?"), 200))
                    raise _GiveUp
                else:
                    self.error("http", "HTTP %s: %s; not retried", status,
                               safe_text(body[:200].decode("utf-8", "replace")))
                    raise _GiveUp
            if attempt == self.options.max_retries:
                break
            if await sleep_or_stop(stop, self.backoff.next() if wait is None else wait):
                break
        raise _GiveUp

    async def _request(self, client: httpx.AsyncClient) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body, read no further than `max_body_bytes` (decompressed); of an
        answer that is not a success, only the start that the log shows."""
        limit = self.options.max_body_bytes
        async with client.stream(
            self.options.method, self.endpoint, params=self.options.params,
            json=self.options.body, headers=self.validators if self.options.conditional else None,
        ) as response:
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if response.status_code >= 300 and size >= 1024:
                        break
                    if size > limit:
                        raise _BadBody(f"response is oversize: more than {limit} bytes (max_body_bytes)",
                                       b"".join(chunks)[:MAX_DEAD_LETTER_RAW])
            except httpx.DecodingError as exc:
                encoding = response.headers.get("Content-Encoding", "?")
                raise _BadBody(f"response cannot be decoded (Content-Encoding {safe_text(encoding, 50)}): "
                               f"{safe_text(exc, 200)}", b"".join(chunks)[:MAX_DEAD_LETTER_RAW]) from None
            return response.status_code, response.headers, b"".join(chunks)

    def _remember_validators(self, headers: httpx.Headers) -> None:
        validators = {}
        if etag := headers.get("ETag"):
            validators["If-None-Match"] = etag
        if modified := headers.get("Last-Modified"):
            validators["If-Modified-Since"] = modified
        self.validators = validators

    def _changed(self, body: bytes) -> bool:
        """False (counted as unchanged) when `body` is the one read last time."""
        digest = hashlib.sha256(body).hexdigest()
        if digest == self.last_body_hash:
            self.stats.extra["unchanged"] += 1
            return False
        self.last_body_hash = digest
        return True

    async def _publish_body(self, publisher: Publisher, body: bytes) -> None:
        if not self._changed(body):
            return
        try:
            # Lenient on NaN: a record holding one is judged (and dead-lettered) on its own.
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            reason = f"response is not JSON: {safe_text(exc, 200) if isinstance(exc, ValueError) else 'nested too deeply'}"
            await self.publish(publisher, [], [(reason, body[:MAX_DEAD_LETTER_RAW])])
            return
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        if (missing := missing_at(document, self.records_path)) is not None:
            reason = f"response holds no records at {self.options.records}: {missing}"
            await self.publish(publisher, [], [(reason, body[:MAX_DEAD_LETTER_RAW])])
            return
        for record in self._records(document):
            raw = raw_json(record)
            if not isinstance(record, dict):
                failures.append(("record is not a JSON object", raw))
            else:
                self.judge(self._map(record), raw, batch, failures)
            if len(batch) + len(failures) >= self.options.batch_size:
                await self.publish(publisher, batch, failures)
                batch, failures = [], []
        await self.publish(publisher, batch, failures)

    def _records(self, document: Any) -> Iterator[Any]:
        for value in select(document, self.records_path):
            if isinstance(value, list):
                yield from value
            else:
                yield value

    def _map(self, record: dict[str, Any]) -> dict[str, Any]:
        if not self.field_paths:
            return record
        mapped: dict[str, Any] = {}
        for name, steps in self.field_paths.items():
            found = select(record, steps)
            # A path with a wildcard gives a list (maybe empty); any other path one value or None.
            mapped[name] = found if None in steps else (found[0] if found else None)
        return mapped
