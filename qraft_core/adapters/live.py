"""What every long-running source shares: credentials, TLS, backoff, state, metrics.

Secrets come only from environment variables named in a source's
`credentials` ({placeholder: VARIABLE}); `{placeholder}` in the endpoint or a
header value is replaced by the variable's value when the adapter starts.
Whitespace around a value is dropped (secret files often end in a newline); a
value that still holds a control character cannot go into a header and is a
configuration error naming the credential, never its value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field, model_validator

from qraft_core.adapters.base import RecordAdapter
from qraft_core.adapters.parsers import GenericOptions
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.events import EventMeta, StandardEvent, iso, stable_id
from qraft_core.metrics import (
    ADAPTER_ERRORS,
    ADAPTER_EVENTS,
    ADAPTER_LAG_SECONDS,
    ADAPTER_RECONNECTS,
)
from qraft_core.redact import MASK, add_secret_values, secrets_pattern

log = logging.getLogger(__name__)

LIVE_VERSION = "qraft-live/1"
GAP_EVENT_TYPE = "source_gap"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What HTTP and websocket clients refuse in a header value (they log the value when they do).
_NOT_IN_HEADER = re.compile(r"[^\x20-\x7e\t]")


class LiveOptions(GenericOptions):
    """Options every long-running source accepts besides the parser's."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self


class TlsOptions(LiveOptions):
    """TLS: verify server certificates (default) against the system store or `ca_file`."""

    verify: bool = True
    ca_file: Path | None = None


class NetworkOptions(TlsOptions):
    """Options of sources reached over HTTP(S) or websockets."""

    # Extra request headers; values may hold {placeholder}s filled from `credentials`.
    headers: dict[str, str] = Field(default_factory=dict)


def resolve_credentials(source: SourceConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secret values of a source's `credentials`, read from the environment.

    >>> src = SourceConfig(name="s", type="rest", credentials={"token": "DOC_TOKEN"})
    >>> resolve_credentials(src, {"DOC_TOKEN": "abc"})
    {'token': 'abc'}
    >>> resolve_credentials(src, {"DOC_TOKEN": " abc\\n"})
    {'token': 'abc'}
    >>> resolve_credentials(src, {})
    Traceback (most recent call last):
    ...
    qraft_core.config.ConfigError: source s: credentials.token: environment variable DOC_TOKEN is not set
    """
    env = os.environ if environ is None else environ
    values = {}
    for key, variable in source.credentials.items():
        if variable not in env:
            raise ConfigError(
                f"source {source.name}: credentials.{key}: environment variable {variable} is not set"
            )
        # Secret files (Kubernetes, Docker) usually end in a newline that is no part of the secret.
        values[key] = env[variable].strip()
    return values


def check_url(endpoint: str, where: str, expected: str) -> None:
    """A ConfigError naming `where` unless `endpoint` has a scheme, a host and a port in 1-65535;
    `{placeholder}`s count as one word (their secrets are not read at validation time).

    >>> check_url("wss://stream.example.com:9443/ws/{key}", "endpoint", "a ws:// URL")
    >>> check_url("http://127.0.0.1:99999/feed", "endpoint", "an http:// URL")
    Traceback (most recent call last):
    ...
    qraft_core.config.ConfigError: endpoint: expected an http:// URL with a port in 1-65535 (got 'http://127.0.0.1:99999/feed')
    >>> check_url("http://[::1/feed", "endpoint", "an http:// URL")
    Traceback (most recent call last):
    ...
    qraft_core.config.ConfigError: endpoint: expected an http:// URL (Invalid IPv6 URL; got 'http://[::1/feed')
    """
    shape = _PLACEHOLDER.sub("x", endpoint)
    try:
        parts = urlsplit(shape)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():
            raise ConfigError(f"{where}: expected {expected} with a port in 1-65535 (got {endpoint!r})") from None
        raise ConfigError(f"{where}: expected {expected} ({exc}; got {endpoint!r})") from None
    if not parts.hostname or re.search(r"[\s\x00-\x1f\x7f]", parts.netloc):
        raise ConfigError(f"{where}: expected {expected} with a host name (got {endpoint!r})")
    if port == 0:
        raise ConfigError(f"{where}: expected {expected} with a port in 1-65535 (got {endpoint!r})")


def check_header_value(value: str, where: str) -> None:
    """A ConfigError naming `where` when `value` holds what a header cannot (a control or non-ASCII
    character); the value itself is not shown, as it may be a secret."""
    if _NOT_IN_HEADER.search(value):
        raise ConfigError(f"{where}: expected printable ASCII for a header value "
                          "(it holds a control or non-ASCII character)")


def fill_placeholders(text: str, secrets: Mapping[str, str], where: str, url_quote: bool = False) -> str:
    """`text` with every {name} replaced by the secret `name` (URL-quoted inside endpoints).

    >>> fill_placeholders("https://x/{token}/a", {"token": "a b"}, "endpoint", url_quote=True)
    'https://x/a%20b/a'
    >>> fill_placeholders("{nope}", {}, "headers.Authorization")
    Traceback (most recent call last):
    ...
    qraft_core.config.ConfigError: headers.Authorization: placeholder {nope} is not declared in credentials
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in secrets:
            raise ConfigError(f"{where}: placeholder {{{name}}} is not declared in credentials")
        return quote(secrets[name], safe="") if url_quote else secrets[name]

    return _PLACEHOLDER.sub(replace, text)


def ssl_context(options: TlsOptions) -> ssl.SSLContext:
    """A client TLS context: verification on unless `verify: false`, `ca_file` trusted when given."""
    if options.ca_file is not None and not options.ca_file.exists():
        raise ConfigError(f"options.ca_file: {options.ca_file} does not exist")
    context = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Backoff:
    """Exponential delays with jitter, so many clients do not reconnect in step.

    Each delay lies in [d/2, d] where d doubles from `initial` up to `maximum`.

    >>> b = Backoff(1.0, 4.0, random.Random(7))
    >>> [0.5 <= b.next() <= 1, 1 <= b.next() <= 2, 2 <= b.next() <= 4, 2 <= b.next() <= 4]
    [True, True, True, True]
    >>> b.reset(); b.attempt
    0
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling * (0.5 + self.rng.random() / 2)

    def reset(self) -> None:
        self.attempt = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless `stop` is set first; True when stopping."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return False
    return True


T = TypeVar("T")


class Stopped(Exception):
    """The source was asked to stop while it waited."""


async def unless_stopped(stop: asyncio.Event, awaitable: Awaitable[T]) -> T:
    """What `awaitable` gives, unless `stop` is set first: it is then cancelled and Stopped raised, so
    a stop or a reload never waits for a slow request."""
    work = asyncio.ensure_future(awaitable)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if work.cancelled():
        raise Stopped
    return work.result()


class RateLimiter:
    """At most `rate_per_s` acquisitions per second (evenly spaced); None means no limit."""

    def __init__(self, rate_per_s: float | None) -> None:
        self.spacing = 1.0 / rate_per_s if rate_per_s else 0.0
        self.next_at = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        wait = self.next_at - now
        self.next_at = max(now, self.next_at) + self.spacing
        if wait > 0:
            await asyncio.sleep(wait)


class StateNotSaved(RuntimeError):
    """A source's position could not be written (disk full, folder gone): the source stops and is
    restarted by the supervisor, rather than reading on and publishing the same records again."""


class JsonState:
    """A small JSON document on disk, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except ValueError as exc:
            raise ConfigError(
                f"{self.path}: state file is not JSON ({exc}); move it away to start over"
            ) from exc
        if not isinstance(data, dict):
            raise self.broken(f"holds {type(data).__name__}, not an object")
        return data

    def broken(self, problem: object) -> ConfigError:
        """The error for a state file that is JSON but not the state of this source."""
        return ConfigError(f"{self.path}: state file does not hold this source's state ({problem}); "
                           "move it away to start over")

    def save(self, data: Mapping[str, Any]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, sort_keys=True, default=str))
            os.replace(tmp, self.path)  # a crash leaves the old or the new state, never half of one
        except OSError as exc:
            raise StateNotSaved(f"{self.path}: state cannot be written ({exc.strerror or exc})") from exc


def gap_event(
    source: str,
    key: str,
    last_time: datetime,
    next_time: datetime,
    last_id: Any,
    next_id: Any,
    reason: str,
    reconnects: int,
) -> StandardEvent:
    """A `source_gap` event: the stream was interrupted and events between the two ids may be missing."""
    missed = next_id - last_id - 1 if isinstance(last_id, int) and isinstance(next_id, int) else None
    return StandardEvent(
        event_id=stable_id(source, GAP_EVENT_TYPE, key, last_id, next_id),
        source=source,
        type=GAP_EVENT_TYPE,
        timestamp=next_time,
        ingest_time=datetime.now(UTC),
        payload={
            "key": key,
            "from": iso(last_time),
            "to": iso(next_time),
            "last_id": last_id,
            "next_id": next_id,
            "missed_ids": missed,
            "reason": reason,
            "reconnects": reconnects,
        },
        meta=EventMeta(parser_version=LIVE_VERSION),
    )


class LiveAdapter(RecordAdapter):
    """A `RecordAdapter` that resolves its credentials at start and reports Prometheus metrics."""

    options_model: ClassVar[type[BaseModel]] = LiveOptions
    options: LiveOptions
    origin: ClassVar[Literal["live", "backfill"]] = "live"
    # What the endpoint must start with, and how to describe it in an error.
    endpoint_prefixes: ClassVar[tuple[str, ...]] = ()
    endpoint_expected: ClassVar[str] = "a non-empty endpoint"

    @classmethod
    def check_source(cls, source: SourceConfig, options: BaseModel, where: str) -> None:
        """Configuration errors visible before the source runs (`qraft config validate`)."""
        endpoint = source.endpoint.strip()
        if not endpoint or (cls.endpoint_prefixes and not endpoint.startswith(cls.endpoint_prefixes)):
            raise ConfigError(f"{where}.endpoint: expected {cls.endpoint_expected} (got {source.endpoint!r})")
        declared = dict.fromkeys(source.credentials, "")
        fill_placeholders(endpoint, declared, f"{where}.endpoint")
        if cls.endpoint_prefixes:
            check_url(endpoint, f"{where}.endpoint", cls.endpoint_expected)
        for name, value in getattr(options, "headers", {}).items():
            check_header_value(fill_placeholders(value, declared, f"{where}.options.headers.{name}"),
                               f"{where}.options.headers.{name}")

    def __init__(self, source: SourceConfig, options: BaseModel, state_dir: Path) -> None:
        super().__init__(source, options, state_dir)
        self.secrets = resolve_credentials(source)
        self.endpoint = fill_placeholders(
            source.endpoint, self.secrets, f"source {source.name}: endpoint", url_quote=True
        )
        declared = self.options.headers if isinstance(self.options, NetworkOptions) else {}
        self.headers = {}
        for name, value in declared.items():
            where = f"source {source.name}: options.headers.{name}"
            for key in _PLACEHOLDER.findall(value):
                check_header_value(self.secrets.get(key, ""), f"source {source.name}: credentials.{key}")
            self.headers[name] = fill_placeholders(value, self.secrets, where)
        self.reconnects = 0
        self.log_fields = {"source": source.name, "source_type": self.type_name}
        # This source's secrets are masked in what it logs, whatever their variables are named, and
        # in every log line of the process (an HTTP client logging the URL it requests).
        self.secret_pattern = secrets_pattern(tuple(sorted(set(self.secrets.values()))))
        add_secret_values(self.secrets.values())

    async def publish(
        self, publisher: Publisher, batch: list[StandardEvent], failures: list[tuple[str, bytes]]
    ) -> None:
        await super().publish(publisher, batch, failures)
        name = self.source.name
        if batch:
            ADAPTER_EVENTS.labels(name).inc(len(batch))
            latest = batch[-1]
            ADAPTER_LAG_SECONDS.labels(name).set((latest.ingest_time - latest.timestamp).total_seconds())
        if failures:
            ADAPTER_ERRORS.labels(name, "dead_letter").inc(len(failures))

    def error(self, kind: str, message: str, *args: Any) -> None:
        """Count and log one error of `kind` (connect, http, query, parse, ...)."""
        self.stats.errors += 1
        ADAPTER_ERRORS.labels(self.source.name, kind).inc()
        log.warning("source %s: " + message, self.source.name, *map(self.masked, args),
                    extra={**self.log_fields, "error_kind": kind})

    def masked(self, value: Any) -> Any:
        """`value` as text with this source's secrets masked; numbers stay numbers (for `%d`)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)
        return text if self.secret_pattern is None else self.secret_pattern.sub(MASK, text)

    def reconnected(self, delay: float, reason: str) -> None:
        self.reconnects += 1
        self.stats.extra["reconnects"] = self.reconnects
        ADAPTER_RECONNECTS.labels(self.source.name).inc()
        log.info("source %s: reconnecting in %.2fs (%s)", self.source.name, delay, self.masked(reason),
                 extra={**self.log_fields, "reconnects": self.reconnects, "delay_s": delay})
