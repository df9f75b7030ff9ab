"""REST polling: fetch a JSON document every interval and publish the records in it.

Records are picked with a small JSONPath subset (`$.data[*]`) and mapped
field by field (`fields: {price: $.p}`). Conditional requests (ETag,
Last-Modified) and a hash of the last body skip unchanged responses; 429
honours Retry-After; timeouts, transport errors and 5xx are retried with
backoff; a body that is not JSON becomes a dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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


def select(document: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Every value the path reaches; missing keys and indexes reach nothing.

    >>> select({"data": [{"p": 1}, {"p": 2}, {}]}, compile_path("$.data[*].p"))
    [1, 2]
    """
    current = [document]
    for step in steps:
        reached: list[Any] = []
        for value in current:
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
        current = reached
    return current


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date.

    >>> retry_after_seconds("3")
    3.0
    >>> retry_after_seconds("Mon, 05 Jan 2026 00:00:10 GMT", datetime(2026, 1, 5, tzinfo=UTC))
    10.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
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
    timeout_s: float = Field(default=10.0, gt=0)
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
                response = await client.request(
                    self.options.method, self.endpoint, params=self.options.params,
                    json=self.options.body, headers=self.validators if self.options.conditional else None,
                )
            except httpx.TimeoutException as exc:
                self.error("timeout", "request timed out after %ss (%s)", self.options.timeout_s,
                           type(exc).__name__)
            except httpx.TransportError as exc:
                self.error("connect", "request failed: %s: %s", type(exc).__name__, exc)
            else:
                status = response.status_code
                if status == 304:
                    self.stats.extra["unchanged"] += 1
                    return None
                if status < 300:
                    self.backoff.reset()
                    self._remember_validators(response)
                    return response.content
                if status == 429:
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                    wait = None if wait is None else min(wait, self.options.retry_after_max_s)
                    self.error("rate_limited", "HTTP 429; retrying after %.2fs", wait or 0.0)
                elif status >= 500:
                    self.error("http", "HTTP %s from the server; retrying", status)
                else:
                    self.error("http", "HTTP %s: %s; not retried", status, response.text[:200])
                    raise _GiveUp
            if attempt == self.options.max_retries:
                break
            if await sleep_or_stop(stop, self.backoff.next() if wait is None else wait):
                break
        raise _GiveUp

    def _remember_validators(self, response: httpx.Response) -> None:
        validators = {}
        if etag := response.headers.get("ETag"):
            validators["If-None-Match"] = etag
        if modified := response.headers.get("Last-Modified"):
            validators["If-Modified-Since"] = modified
        self.validators = validators

    async def _publish_body(self, publisher: Publisher, body: bytes) -> None:
        digest = hashlib.sha256(body).hexdigest()
        if digest == self.last_body_hash:
            self.stats.extra["unchanged"] += 1
            return
        self.last_body_hash = digest
        try:
            # Lenient on NaN: a record holding one is judged (and dead-lettered) on its own.
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            reason = f"response is not JSON: {safe_text(exc, 200) if isinstance(exc, ValueError) else 'nested too deeply'}"
            await self.publish(publisher, [], [(reason, body[:MAX_DEAD_LETTER_RAW])])
            return
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
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
