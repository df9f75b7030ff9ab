"""REST polling: fetch a JSON document every interval and publish the records in it.

Records are picked with a small JSONPath subset (`$.data[*]`) and mapped
field by field (`fields: {price: $.p}`). Conditional requests (ETag,
Last-Modified) and a hash of the last body skip unchanged responses; 429
and 5xx honour Retry-After; timeouts (of the whole response, so a server
dripping bytes cannot hold a poll), transport errors and 5xx are retried with
backoff. A body that is not JSON, larger than `max_body_bytes` (after
decompression), undecodable, or without records where `records` points
becomes a dead letter; an empty body (204, or 200 without content) is no
records. A record that cannot be read (an integer of thousands of digits,
nesting too deep) is its own dead letter: the page is then split into its
records' texts and each is read alone, so the good records of the page are
published. One response keeps at most `MAX_LETTERS_PER_RESPONSE` dead letters
and one more that counts the rest, published in messages of many letters.
`{placeholder}`s in the strings of `params` and `body` are filled from the
source's credentials, as those of the endpoint and headers are.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, Field, field_validator

from qraft_core.adapters.base import AdapterStats, register_adapter
from qraft_core.adapters.live import (
    Backoff,
    LiveAdapter,
    NetworkOptions,
    RateLimiter,
    Stopped,
    fill_placeholders,
    sleep_or_stop,
    ssl_context,
    unless_stopped,
)
from qraft_core.adapters.parsers import raw_json
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.events import MAX_DEAD_LETTER_RAW, StandardEvent, dead_letter_envelope, safe_text
from qraft_core.metrics import ADAPTER_ERRORS

# Dead letters kept of one response: the first ones with their reasons, then one letter counting the rest,
# so a page of millions of bad records cannot flood the bus.
MAX_LETTERS_PER_RESPONSE = 100
# Dead letters are published many to a message, in messages of at most this size (one letter is
# never more than 200 KB, well under the bus's 1 MiB).
LETTER_MESSAGE_BYTES = 256 * 1024

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
    """Retry-After as seconds: a number of seconds or an HTTP date; None when it is not usable (then
    the backoff applies): not a number or date, negative, or a date already past (the server's clock
    or header is wrong, and retrying at once would hammer it).

    >>> retry_after_seconds("3")
    3.0
    >>> retry_after_seconds("Mon, 05 Jan 2026 00:00:10 GMT", datetime(2026, 1, 5, tzinfo=UTC))
    10.0
    >>> retry_after_seconds("soon") is None
    True
    >>> retry_after_seconds("nan") is None
    True
    >>> retry_after_seconds("-5") is None
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
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # A date in "-0000" (no zone) is read without one; HTTP dates are GMT.
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return seconds if seconds >= 0 else None


Span = tuple[int, int]  # where one JSON value lies in a text: [start, end)
_SPACE = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_QUOTE_OR_BRACKET = re.compile(r'["\[\]{}]')
_SCALAR = re.compile(r"[^,\]}\s]+")


def _skip_space(text: str, position: int) -> int:
    return _SPACE.match(text, position).end()  # type: ignore[union-attr]  # matches the empty string


def _value_end(text: str, start: int) -> int:
    """Where the JSON value at `start` ends, found from its quotes and brackets alone: no value is
    built and nothing recurses, so no depth or number size can make it fail."""
    first = text[start:start + 1]
    if first == '"':
        if (string := _STRING.match(text, start)) is None:
            raise ValueError(f"unterminated string at char {start}")
        return string.end()
    if first in ("[", "{"):
        depth, position = 0, start
        while (found := _QUOTE_OR_BRACKET.search(text, position)) is not None:
            if found.group() == '"':
                position = _value_end(text, found.start())
                continue
            depth += 1 if found.group() in "[{" else -1
            position = found.end()
            if depth == 0:
                return position
        raise ValueError(f"unclosed {first!r} at char {start}")
    if (scalar := _SCALAR.match(text, start)) is None:
        raise ValueError(f"expected a value at char {start}")
    return scalar.end()


def _members(text: str, span: Span) -> Iterator[tuple[str | int, Span]]:
    """The keys (of an object) or indexes (of an array) and the spans of the values; none for a scalar."""
    opening = text[span[0]]
    if opening not in ("[", "{"):
        return
    closing = "]" if opening == "[" else "}"
    position = _skip_space(text, span[0] + 1)
    index = 0
    while not text.startswith(closing, position):
        key: str | int = index
        if opening == "{":
            if not text.startswith('"', position):
                raise ValueError(f"expected a key at char {position}")
            key_end = _value_end(text, position)
            key = json.loads(text[position:key_end])
            position = _skip_space(text, key_end)
            if not text.startswith(":", position):
                raise ValueError(f"expected ':' at char {position}")
            position = _skip_space(text, position + 1)
        end = _value_end(text, position)
        yield key, (position, end)
        index += 1
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif not text.startswith(closing, position):
            raise ValueError(f"expected ',' or {closing!r} at char {position}")


def reached_spans(text: str, steps: tuple[Step, ...]) -> list[Span]:
    """The spans of what the path reaches in the JSON `text`, as `select` finds the values, without
    reading any value but the keys on the way; ValueError when the text is not shaped as JSON.

    >>> text = '{"data": [{"v": 1}, 99e999999, {"v": [[[]]]}]}'
    >>> [text[start:end] for start, end in reached_spans(text, compile_path("$.data"))]
    ['[{"v": 1}, 99e999999, {"v": [[[]]]}]']
    """
    start = _skip_space(text, 0)
    end = _value_end(text, start)
    if _skip_space(text, end) != len(text):
        raise ValueError(f"extra data at char {_skip_space(text, end)}")
    spans = [(start, end)]
    for step in steps:
        reached: list[Span] = []
        for span in spans:
            if step is None:
                reached.extend(value for _, value in _members(text, span))
            elif isinstance(step, int):
                elements = [value for _, value in _members(text, span)] if text[span[0]] == "[" else []
                if -len(elements) <= step < len(elements):
                    reached.append(elements[step])
            elif text[span[0]] == "{":
                # A key given twice: the last one, as json.loads reads it.
                found = [value for key, value in _members(text, span) if key == step]
                reached.extend(found[-1:])
        spans = reached
    return spans


def record_texts(text: str, spans: list[Span], spread: bool = False) -> Iterator[str]:
    """The text of each record: the elements of a list reached, or the value reached itself. With
    `spread`, what is reached are the members of `spans` (a path ending in `[*]`): they are found one
    by one as they are read, so a page of millions of records is never held as a list of them.

    >>> text = '[{"v": 1}, 99e999999, {"v": [[[]]]}]'
    >>> list(record_texts(text, [(0, len(text))]))
    ['{"v": 1}', '99e999999', '{"v": [[[]]]}']
    >>> list(record_texts(text, [(0, len(text))], spread=True))
    ['{"v": 1}', '99e999999', '{"v": [[[]]]}']
    """
    for span in spans:
        for start, end in (value for _, value in _members(text, span)) if spread else [span]:
            if text[start] == "[":
                for _, (element_start, element_end) in _members(text, (start, end)):
                    yield text[element_start:element_end]
            else:
                yield text[start:end]


@dataclass(frozen=True)
class _Unreadable:
    """A record of a page whose text JSON cannot read (a huge integer, nesting too deep)."""

    reason: str
    raw: bytes


def _fill(value: Any, secrets: dict[str, str], where: str) -> Any:
    """`value` (params, a JSON body) with the {placeholder}s of its strings filled, keys named in errors."""
    if isinstance(value, str):
        return fill_placeholders(value, secrets, where)
    if isinstance(value, dict):
        return {key: _fill(item, secrets, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, secrets, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def letter_messages(failures: list[tuple[str, bytes]], source: str) -> Iterator[tuple[bytes, int]]:
    """The dead letters as bus messages of many letters (one a line, as events are): each message and
    how many letters it holds.

    >>> [(data.count(b"\\n"), count) for data, count in letter_messages([("a", b"1"), ("b", b"2")], "s")]
    [(1, 2)]
    """
    lines: list[bytes] = []
    size = 0
    for reason, raw in failures:
        line = dead_letter_envelope(reason, raw, source)
        if lines and size + len(line) > LETTER_MESSAGE_BYTES:
            yield b"\n".join(lines), len(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        yield b"\n".join(lines), len(lines)


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

    @classmethod
    def check_source(cls, source: SourceConfig, options: BaseModel, where: str) -> None:
        super().check_source(source, options, where)
        if not isinstance(options, RestOptions):
            raise ConfigError(f"{where}.options: expected the options of a rest source")
        declared = dict.fromkeys(source.credentials, "")
        _fill(options.params, declared, f"{where}.options.params")
        _fill(options.body, declared, f"{where}.options.body")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        where = f"source {self.source.name}: options"
        self.params = _fill(self.options.params, self.secrets, f"{where}.params")
        self.body = _fill(self.options.body, self.secrets, f"{where}.body")
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
                except Stopped:
                    break
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
        """The body of a changed 200 response, None when unchanged; _GiveUp after the retries, Stopped
        as soon as the source is stopped."""
        for attempt in range(self.options.max_retries + 1):
            await unless_stopped(stop, self.limiter.acquire())  # a low rate_limit_per_s waits long
            self.stats.extra["requests"] += 1
            wait: float | None = None
            try:
                async with asyncio.timeout(self.options.timeout_s):
                    status, headers, body = await unless_stopped(stop, self._request(client))
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
            self.options.method, self.endpoint, params=self.params,
            json=self.body, headers=self.validators if self.options.conditional else None,
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

    async def publish(
        self, publisher: Publisher, batch: list[StandardEvent], failures: list[tuple[str, bytes]]
    ) -> None:
        await super().publish(publisher, batch, [])
        for data, count in letter_messages(failures, self.source.name):
            await publisher.publish_raw(self.source.name, data)
            self.stats.dead_lettered += count
            ADAPTER_ERRORS.labels(self.source.name, "dead_letter").inc(count)

    async def _publish_body(self, publisher: Publisher, body: bytes) -> None:
        if not self._changed(body):
            return
        if not body.strip():
            return  # 204 No Content, or a 200 without a body: no records
        records: Iterable[Any]
        try:
            # Lenient on NaN: a record holding one is judged (and dead-lettered) on its own.
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            one_by_one = self._records_one_by_one(body)
            if one_by_one is None:
                reason = ("response is not JSON: "
                          f"{safe_text(exc, 200) if isinstance(exc, ValueError) else 'nested too deeply'}")
                await self.publish(publisher, [], [(reason, body[:MAX_DEAD_LETTER_RAW])])
                return
            records = one_by_one
        else:
            if (missing := missing_at(document, self.records_path)) is not None:
                reason = f"response holds no records at {self.options.records}: {missing}"
                await self.publish(publisher, [], [(reason, body[:MAX_DEAD_LETTER_RAW])])
                return
            records = self._records(document)
        await self._publish_records(publisher, records)

    def _records_one_by_one(self, body: bytes) -> Iterator[Any] | None:
        """The records of a page JSON cannot read as a whole, each read alone; None when the page is
        not shaped as JSON or the path reaches nothing in it (the page is then one dead letter)."""
        steps = self.records_path
        spread = bool(steps) and steps[-1] is None
        try:
            text = body.decode("utf-8-sig")
            spans = reached_spans(text, steps[:-1] if spread else steps)
        except ValueError:
            return None
        return self._read_each(text, spans, spread) if spans else None

    @staticmethod
    def _read_each(text: str, spans: list[Span], spread: bool) -> Iterator[Any]:
        try:
            for record_text in record_texts(text, spans, spread):
                try:
                    yield json.loads(record_text)
                except RecursionError:
                    yield _Unreadable("record is not JSON: nested too deeply",
                                      record_text[:MAX_DEAD_LETTER_RAW].encode())
                except ValueError as exc:
                    yield _Unreadable(f"record is not JSON: {safe_text(exc, 200)}",
                                      record_text[:MAX_DEAD_LETTER_RAW].encode())
        except ValueError as exc:  # the records' list itself is broken after the records read so far
            yield _Unreadable(f"response is not JSON after its last readable record: {safe_text(exc, 200)}", b"")

    async def _publish_records(self, publisher: Publisher, records: Iterable[Any]) -> None:
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        letters = 0
        first_not_kept: tuple[str, bytes] | None = None  # the first letter past the cap
        for record in records:
            failed: list[tuple[str, bytes]] = []
            if isinstance(record, _Unreadable):
                failed.append((record.reason, record.raw))
            elif not isinstance(record, dict):
                failed.append(("record is not a JSON object", raw_json(record)))
            else:
                self.judge(self._map(record), raw_json(record), batch, failed)
            if failed:
                letters += 1
                if letters <= MAX_LETTERS_PER_RESPONSE:
                    failures.extend(failed)
                elif first_not_kept is None:
                    first_not_kept = failed[0]
            if len(batch) + len(failures) >= self.options.batch_size:
                await self.publish(publisher, batch, failures)
                batch, failures = [], []
        if first_not_kept is not None:
            reason, raw = first_not_kept
            failures.append((
                f"{letters - MAX_LETTERS_PER_RESPONSE} more records of this response are not events; they are "
                f"not kept one by one (at most {MAX_LETTERS_PER_RESPONSE} dead letters a response). "
                f"The first of them: {reason}", raw))
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
