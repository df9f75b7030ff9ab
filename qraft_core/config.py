"""Loading and validating Qraft's YAML configuration.

Every file is parsed into a pydantic model that forbids unknown keys, so a
typo is an error. Errors name the file, the key path and what was expected.
Values in `config/qraft.yaml` can be overridden by `QRAFT_<SECTION>_<KEY>`
environment variables (for example `QRAFT_NATS_URL`, `QRAFT_STORE_DSN`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qraft_core.events import MAX_RECORD_BYTES
from qraft_core.plugins import PluginError, load_plugins
from qraft_core.redact import redact
from qraft_core.registry import Registry

CONFIG_DIR_ENV = "QRAFT_CONFIG_DIR"
ENV_PREFIX = "QRAFT_"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who has to fix it."""


# What configuration checks with knowledge only other layers have is registered by those layers
# (built-in plugins), so this module imports none of them: the column whose age a table's
# retention counts (the store), and checks of a source beyond its own keys (the adapter registry:
# its type's options, its parser), each called with the source and where it stands in the file.
RETENTION_CLOCKS: Registry[str] = Registry("table with a retention")
SOURCE_CHECKS: Registry[Callable[[SourceConfig, str], object]] = Registry("source check")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic reads `true` as 1 in a number field: `interval_minutes: true` would be one minute.
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float, int | None, float | None):
                raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


STORE_SCHEMES = ("chdb://", "http://", "https://")


def _host_and_numeric_port(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when not a number from 0 to 65535
    except ValueError:
        return False
    return bool(parts.hostname)


class StoreConfig(Strict):
    # Empty means the embedded default: chdb://<data_dir>/clickhouse
    dsn: str = ""
    lock_timeout_s: float = Field(default=60.0, gt=0)
    # A cluster defined on the server (remote_servers): Replicated tables ON CLUSTER + Distributed.
    cluster: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,63})?$")
    # Days a table's rows are kept (a TTL); tables not listed are kept for good.
    retention_days: dict[str, int] = Field(default_factory=dict)
    # Raw and clean rows of a source expire after that source's `retention_days` in sources.yaml.
    source_retention: bool = False

    @field_validator("dsn")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if value and not value.startswith(STORE_SCHEMES):
            raise ValueError("expected empty (the embedded store) or a DSN starting with chdb://, http:// or https://")
        if value.startswith(("http://", "https://")) and not _host_and_numeric_port(value):
            raise ValueError("expected a server URL with a host and an optional numeric port, "
                             "e.g. http://clickhouse:8123")
        return value

    @field_validator("retention_days")
    @classmethod
    def _known_tables(cls, value: dict[str, int]) -> dict[str, int]:
        for table, days in value.items():
            if table not in RETENTION_CLOCKS:
                raise ValueError(f"{table!r} is not a table with a retention; expected one of {', '.join(RETENTION_CLOCKS)}")
            if days < 1:
                raise ValueError(f"{table}: expected at least 1 day (got {days})")
        return value

    @model_validator(mode="after")
    def _cluster_needs_a_server(self) -> StoreConfig:
        if self.cluster and not self.dsn.startswith(("http://", "https://")):
            raise ValueError("cluster: a cluster needs dsn to name one of its ClickHouse servers (http(s)://…)")
        return self


class NatsConfig(Strict):
    # Empty means the embedded nats-server, started on a free loopback port. Several seed
    # URLs of a cluster: a comma-separated string or a list (kept as the comma-separated string).
    url: str = ""
    stream: str = Field(default="QRAFT_RAW", pattern=r"^[A-Za-z0-9_\-]+$")
    subject_prefix: str = "qraft.raw"
    duplicate_window_s: int = Field(default=3600, gt=0)
    # The embedded server's max_payload is set to this; against another server the smaller one wins.
    max_msg_bytes: int = Field(default=8 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)
    # None: 3 on a cluster, 1 on a single server; an existing stream never gets fewer than it has.
    replicas: int | None = Field(default=None, ge=1, le=5)
    # Stream limits; 0 leaves the stream's own (unlimited when Qraft creates it).
    max_age_s: int = Field(default=0, ge=0)
    max_bytes: int = Field(default=0, ge=0)
    # A publish retries through leader elections and reconnects for this long before failing.
    publish_timeout_s: float = Field(default=120.0, gt=0)
    # How long a one-shot command waits for an unreachable server (services wait until stopped).
    connect_wait_s: float = Field(default=60.0, gt=0)

    @field_validator("url", mode="before")
    @classmethod
    def _seed_list(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return ",".join(item.strip() for item in value)
        return value

    @field_validator("url")
    @classmethod
    def _seed_shape(cls, value: str) -> str:
        # The client would fail on these only when connecting, in every process `up` starts.
        seeds = [seed.strip() for seed in value.split(",") if seed.strip()]
        schemes = set()
        for seed in seeds:
            problem = _nats_url_problem(seed)
            if problem:
                raise ValueError(problem if len(seeds) == 1 else f"{redact(seed)}: {problem}")
            schemes.add(seed.startswith(("ws://", "wss://")))
        if len(schemes) > 1:
            raise ValueError("expected seed URLs of one kind: all nats:// or tls://, or all ws:// or wss://")
        return value


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _nats_url_problem(seed: str) -> str | None:
    """What is wrong with one NATS server URL, or None.

    >>> _nats_url_problem("nats://user:pw@:bad")
    'expected a host name, e.g. nats://nats.example:4222'
    >>> _nats_url_problem("nats://nats:42x2")
    'expected a port number from 1 to 65535 after the host (got 42x2)'
    >>> _nats_url_problem("nats.example:4222")
    'expected a URL starting with nats://, tls://, ws:// or wss://'
    """
    try:
        parts = urlsplit(seed)
    except ValueError as exc:  # an unclosed [IPv6] bracket
        return f"not a URL ({exc})"
    if parts.scheme not in NATS_SCHEMES or not seed.startswith(f"{parts.scheme}://"):
        return "expected a URL starting with nats://, tls://, ws:// or wss://"
    if not parts.hostname:
        return f"expected a host name, e.g. {parts.scheme}://nats.example:4222"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"expected a port number from 1 to 65535 after the host (got {port})"
    return None


class PartitionsConfig(Strict):
    interval_minutes: int = Field(default=1, ge=1, le=1440)
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    # None: windows keep coming; the newest `max_partitions` are kept.
    end: datetime | None = None
    allowed_lateness_s: int = Field(default=30, ge=0)
    # Dagster's UI slows down past a few tens of thousands of partitions.
    max_partitions: int = Field(default=30_000, ge=10)
    max_windows_per_run: int = Field(default=60, ge=1)
    # How many windows back a late event may reopen (re-materialise).
    max_reopen_windows: int = Field(default=120, ge=0)
    # Runs one sensor tick may request; runs execute one at a time, so more only grows the queue.
    max_runs_per_tick: int = Field(default=10, ge=1)

    @field_validator("end", mode="before")
    @classmethod
    def _empty_end_is_open(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("interval_minutes")
    @classmethod
    def _schedulable(cls, value: int) -> int:
        # Windows follow a cron schedule: minutes dividing the hour, or hours dividing the day.
        if 60 % value and (value % 60 or 24 % (value // 60)):
            raise ValueError("expected a divisor of 60 or a whole number of hours dividing 24")
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> PartitionsConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    @model_validator(mode="after")
    def _start_on_the_grid(self) -> PartitionsConfig:
        # Dagster's windows begin at the first grid point at or after `start`, replays cut windows on
        # the grid from 1970: a start between grid points would have every replayed window refused.
        if (self.start - EPOCH) % self.interval:
            floor = self.start - (self.start - EPOCH) % self.interval
            raise ValueError(f"start ({self.start.isoformat()}) must lie on the grid of interval_minutes "
                             f"({self.interval_minutes} min), e.g. {floor.isoformat()}")
        return self

    @model_validator(mode="after")
    def _bounded_range_fits(self) -> PartitionsConfig:
        # A fixed range is all partitions at once; an open one keeps only the newest `max_partitions`.
        if self.end is not None and (windows := (self.end - self.start) // self.interval) > self.max_partitions:
            raise ValueError(f"start..end holds {windows} windows of interval_minutes ({self.interval_minutes} min), "
                             f"more than max_partitions ({self.max_partitions}): shorten the range, lengthen "
                             "the windows or raise max_partitions")
        return self

    @property
    def interval(self) -> timedelta:
        return timedelta(minutes=self.interval_minutes)


class LanderConfig(Strict):
    batch_size: int = Field(default=20_000, ge=1)
    batch_timeout_ms: int = Field(default=500, ge=1)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    durable_name: str = "qraft-lander"
    max_payload_bytes: int = Field(default=MAX_RECORD_BYTES, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    # Live sources (events with meta.origin "live"): an event time this far after its ingest time
    # is a broken clock; the same bound as clean.max_future_s, for the same reason.
    live_max_future_s: int = Field(default=300, ge=0)
    # ... and this far before it is not live data: a week covers a source's own catch-up after an
    # outage; older history belongs to a file (backfill) source.
    live_max_age_s: int = Field(default=7 * 86_400, ge=1)
    # Backfill events are judged against the median event time of their source in the batch,
    # never the clock: a century holds any real history in one batch (a 20,000-line batch of
    # daily values spans 55 years), a mistyped year (2999 for 2019) falls outside it.
    backfill_max_spread_days: int = Field(default=36_525, ge=1)
    # A re-sent event id is matched with its stored versions whose event time lies within this
    # many seconds of the batch's (the lookup reads only that stretch of raw_events): a day covers
    # corrections and redeliveries; a version moved further stays a second row.
    resend_window_s: int = Field(default=86_400, ge=0)
    # A store error that is neither known to be transient nor known to be permanent is retried this
    # many times, then treated as permanent (its rows are dead-lettered with the error).
    max_store_attempts: int = Field(default=10, ge=1)
    # The embedded store stays open this long after a batch: opening chDB costs 0.1-0.5 s, as much
    # as landing a batch of 20,000 events; a process waiting for the store gets it when the batch
    # in hand is written, and an idle lander gives the engine back.
    store_keep_open_s: float = Field(default=5.0, ge=0)


class CleanConfig(Strict):
    # An event time this far after its ingest time is a broken clock, not a skew.
    max_future_s: int = Field(default=300, ge=0)
    # An event this much older than the newest event of its source (or than its ingest
    # time, whichever is earlier) is a broken clock: history of any age still cleans.
    max_age_days: int = Field(default=3650, ge=1)
    # Payload fields that must hold finite numbers (any sign), per event type;
    # numeric strings count as numbers. Domain rules (positive prices) come from plugins.
    numeric_fields: dict[str, list[str]] = Field(default_factory=dict)


class MlflowConfig(Strict):
    # Empty means a SQLite store under the data directory.
    tracking_uri: str = ""
    experiment: str = "qraft"
    enabled: bool = True


class LlmConfig(Strict):
    enabled: bool = False
    url: str = ""
    model: str = ""
    api_key_env: str = "QRAFT_LLM_API_KEY"
    timeout_s: float = Field(default=20.0, gt=0)
    max_tokens: int = Field(default=400, gt=0)


class ExplainConfig(Strict):
    language: Literal["en", "zh"] = "en"
    context_minutes: int = Field(default=5, ge=1)
    actions: dict[str, dict[str, str]] = Field(default_factory=dict)


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8800, ge=1, le=65535)
    api_key_env: str = "QRAFT_API_KEY"
    read_requires_key: bool = False
    max_range_days: int = Field(default=31, ge=1)
    max_page: int = Field(default=1000, ge=1)
    # The embedded store stays open this long after the last request (reopening costs ~0.1 s);
    # another process asking for it gets it as soon as the requests in flight end.
    store_keep_open_s: float = Field(default=30.0, ge=0)
    # Responses (pattern pages, cards) are reused while the tables they read are unchanged;
    # the tables' versions are read at most this often, so other processes' writes show up within it.
    cache_check_s: float = Field(default=0.25, ge=0)
    # An entry is rebuilt after this long even if no version changed (bounds any staleness).
    cache_ttl_s: float = Field(default=60.0, gt=0)
    cache_max_mb: float = Field(default=64.0, ge=0)


class DagsterK8sConfig(Strict):
    """Where the Kubernetes run launcher starts one Job per run (`dagster.run_launcher: k8s`)."""

    image: str = ""
    namespace: str = "qraft"
    service_account: str = "qraft-dagster"
    # The ConfigMap holding this dagster.yaml, mounted into every run pod.
    instance_config_map: str = "qraft-dagster-instance"
    env_config_maps: list[str] = Field(default_factory=lambda: ["qraft-env"])
    env_secrets: list[str] = Field(default_factory=lambda: ["qraft-secrets"])
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # A ReadWriteMany claim mounted at dagster.compute_logs_dir in every run pod, so the
    # webserver shows the step logs of runs whose pods are gone.
    compute_logs_claim: str = ""


POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


class DagsterConfig(Strict):
    port: int = Field(default=3000, ge=1, le=65535)
    # `sqlite`: runs, event log and sensor cursors under the Dagster home (one machine).
    # `postgresql://user@host:5432/db`: the same on a server shared by webserver, daemon and runs;
    # the password comes from PGPASSWORD (libpq), so dagster.yaml never holds it.
    storage: str = "sqlite"
    run_launcher: Literal["default", "k8s"] = "default"
    k8s: DagsterK8sConfig = DagsterK8sConfig()
    # Step stdout/stderr; empty = under the Dagster home, else a directory every process shares.
    compute_logs_dir: str = ""

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value == "sqlite":
            return value
        if not value.startswith(POSTGRES_SCHEMES):
            raise ValueError(f"expected 'sqlite' or a URL starting with {' or '.join(POSTGRES_SCHEMES)}")
        parts = urlsplit(value)
        if parts.password is not None:
            raise ValueError("the URL holds a password; set it in the PGPASSWORD environment variable instead")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected a host and a database name, e.g. postgresql://dagster@db:5432/dagster")
        return value

    @model_validator(mode="after")
    def _launcher_has_image(self) -> DagsterConfig:
        if self.run_launcher == "k8s" and not self.k8s.image:
            raise ValueError("k8s.image: the Kubernetes run launcher needs the image of the user code")
        if self.k8s.compute_logs_claim and not self.compute_logs_dir:
            raise ValueError("k8s.compute_logs_claim: set compute_logs_dir, where the claim is mounted")
        return self


class QraftConfig(Strict):
    data_dir: Path = Path(".qraft")
    # Modules registering operators, cleaning rules, metric sets and card vocabulary
    # (besides the built-in markets plugin and installed `qraft.plugins` entry points).
    plugins: list[str] = Field(default_factory=list)
    store: StoreConfig = StoreConfig()
    nats: NatsConfig = NatsConfig()
    partitions: PartitionsConfig = PartitionsConfig()
    lander: LanderConfig = LanderConfig()
    clean: CleanConfig = CleanConfig()
    mlflow: MlflowConfig = MlflowConfig()
    llm: LlmConfig = LlmConfig()
    explain: ExplainConfig = ExplainConfig()
    api: ApiConfig = ApiConfig()
    dagster: DagsterConfig = DagsterConfig()

    @field_validator("data_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # An empty path is the current folder: data would land wherever a command is run from.
        if isinstance(value, str) and not value.strip():
            raise ValueError("expected a folder path, not an empty string")
        return value

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        # Every command creates it on first use; a file in its place would fail deep inside one.
        if value.exists() and not value.is_dir():
            raise ValueError(f"expected a folder, {value} is a file")
        return value

    @property
    def store_dsn(self) -> str:
        return self.store.dsn or f"chdb://{self.data_dir.resolve() / 'clickhouse'}"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir.resolve() / "dagster"


class SourceConfig(Strict):
    """One source in `config/sources.yaml`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    type: str
    enabled: bool = True
    endpoint: str = ""
    parser: str = "generic"
    # Type-specific settings, validated by the adapter registered for `type`.
    options: dict[str, Any] = Field(default_factory=dict)
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    # Names of environment variables holding secrets; never the secrets.
    credentials: dict[str, str] = Field(default_factory=dict)
    # Governance metadata for the source registry.
    owner: str = ""
    retention_days: int = Field(default=30, ge=1)
    sensitivity: Literal["public", "internal", "confidential", "restricted"] = "internal"
    description: str = ""


class SourcesFile(Strict):
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for source in value:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} appears twice")
            seen.add(source.name)
        return value

    def get(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"unknown source {name!r} (configured: {known})")


M = TypeVar("M", bound=BaseModel)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Pydantic's wording where it names Python rather than YAML ("a valid dictionary or instance of SourceConfig").
_EXPECTED = {"dict_type": "expected a mapping of keys", "model_type": "expected a mapping of keys",
             "list_type": "expected a list", "path_type": "expected a path (text)"}


def describe_validation_error(
    path: Path | str, error: ValidationError, origins: Mapping[tuple[str, ...], str] | None = None
) -> str:
    """One line per problem: file, key path, what was expected, what was found. `origins` names where
    a key's value came from when not from the file (an environment variable)."""
    lines = []
    for problem in error.errors():
        key = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in problem["loc"]
        ).replace(".[", "[")
        found = problem.get("input")
        expected = problem["msg"]
        if problem["type"] == "extra_forbidden":
            expected = "an unknown key (check the spelling)"
        expected = _EXPECTED.get(problem["type"], expected)
        if isinstance(found, (dict, list)) and problem["type"] in _EXPECTED:
            expected += f", got a {'mapping' if isinstance(found, dict) else 'list'}"
        shown = "" if isinstance(found, (dict, list)) else f" (got {_shorten(redact(repr(found)))})"
        origin = _origin(origins or {}, tuple(str(part) for part in problem["loc"]), path)
        lines.append(f"{origin}: {key or '<top>'}: {expected}{shown}")
    return "\n".join(lines)


def _origin(origins: Mapping[tuple[str, ...], str], key: tuple[str, ...], path: Path | str) -> Path | str:
    """Where the value at `key` was set: the variable setting it or a mapping holding it, else the file."""
    for length in range(len(key), 0, -1):
        if key[:length] in origins:
            return origins[key[:length]]
    return path


# A configuration file is a few kilobytes of settings; these bounds are far above any real one and
# far below what exhausts memory or the stack (YAML aliases can expand a small file exponentially).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML in which a key written twice in one mapping is an error: YAML would keep the
    last silently, so a second `lander:` section would drop the first. Keys merged in with
    `<<: *anchor` may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                break  # an unhashable key: the constructor below says so
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found key {safe_key(key)} twice (first on line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def safe_key(key: Any) -> str:
    return _shorten(redact(repr(key)), 60)


def read_regular_file(path: Path) -> bytes:
    """The bytes of a file; a FIFO, a device or a socket is an OSError "not a regular file" rather
    than read (a FIFO would wait for a writer forever, /dev/zero never ends). A folder is an
    IsADirectoryError, as for `Path.read_bytes`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO does not wait for its writer
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML configuration file holds; any damage is a ConfigError naming the file.

    Missing, a folder, a FIFO or a device, unreadable, binary, not UTF-8, empty, not YAML, nested
    deeper than `MAX_CONFIG_DEPTH` or expanding (through aliases) to more than `MAX_CONFIG_VALUES` values.
    """
    try:
        raw = read_regular_file(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: <top>: expected a YAML file, found a folder") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: <top>: expected a YAML file of at most {MAX_CONFIG_BYTES} bytes "
                          f"(got {len(raw)})")
    if b"\x00" in raw:
        raise ConfigError(f"{path}: <top>: expected YAML text, found a binary file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: <top>: expected UTF-8 text, found byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            "(save the file as UTF-8)"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a value YAML reads but Python cannot hold
        raise ConfigError(f"{path}: not valid YAML: {_shorten(str(exc))}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: <top>: expected at most {MAX_CONFIG_DEPTH} levels of nesting") from None
    if data is None:
        raise ConfigError(f"{path}: <top>: expected a mapping of keys, the file is empty "
                          "(delete it to use the defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <top>: expected a mapping of keys, got {type(data).__name__}")
    _check_size(data, path)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and why a file is not YAML, on one line (PyYAML's own text spans several).

    >>> try:
    ...     yaml.safe_load("nats: [unclosed")
    ... except yaml.YAMLError as exc:
    ...     print(_yaml_problem(exc))
    line 1, column 16: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 1, column 7)
    """
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"not valid YAML: {_shorten(' '.join(str(exc).split()))}"
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return text


def _check_size(data: Any, path: Path) -> None:
    """Nesting and value count, counting every use of an alias; stops at the first excess."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    values = 0
    while stack:
        item, where, depth = stack.pop()
        values += 1
        if values > MAX_CONFIG_VALUES:
            raise ConfigError(f"{path}: <top>: expected at most {MAX_CONFIG_VALUES} values, the file expands "
                              "to more (YAML anchors and aliases?)")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{path}: {where[:120] or '<top>'}: expected at most {MAX_CONFIG_DEPTH} "
                              "levels of nesting")
        if isinstance(item, dict):
            stack.extend((value, f"{where}.{key}" if where else str(key), depth + 1) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend((value, f"{where}[{index}]", depth + 1) for index, value in enumerate(item))


def parse_model(
    model: type[M], data: Mapping[str, Any], path: Path | str, origins: Mapping[tuple[str, ...], str] | None = None
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc, origins)) from exc


def config_dir(explicit: Path | str | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_DIR_ENV) or "config")


def config_folder(explicit: Path | str | None = None) -> Path:
    """`config_dir`, checked: a ConfigError when it is missing, a file, or cannot be read (a wrong
    --config-dir must not run silently on the defaults)."""
    folder = config_dir(explicit)
    try:
        os.listdir(folder)
    except FileNotFoundError:
        raise ConfigError(f"{folder}: configuration folder not found (set --config-dir or {CONFIG_DIR_ENV})") from None
    except NotADirectoryError:
        raise ConfigError(f"{folder}: expected a configuration folder, found a file") from None
    except OSError as exc:
        raise ConfigError(f"{folder}: configuration folder cannot be read ({exc.strerror or exc})") from None
    return folder


def _env_paths(model: type[BaseModel], environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """The key path each QRAFT_SECTION_KEY variable sets → the variable's name."""
    paths: dict[tuple[str, ...], str] = {}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name != CONFIG_DIR_ENV:
            path = _match_field_path(model, name[len(ENV_PREFIX) :].lower())
            if path is not None:
                paths[tuple(path)] = f"${name} (environment)"
    return paths


def _env_overrides(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested overrides from QRAFT_SECTION_KEY variables, matched against the model's fields."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_DIR_ENV:
            continue
        path = _match_field_path(model, name[len(ENV_PREFIX) :].lower())
        if path is None:
            continue
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        # Text settings keep the text (QRAFT_NATS_STREAM=off is a name, not False); others are YAML.
        textual = _leaf_annotation(model, path) in (str, Path)
        target[path[-1]] = raw if textual or raw == "" else yaml.safe_load(raw)
    return overrides


def _leaf_annotation(model: type[BaseModel], path: list[str]) -> Any:
    annotation: Any = model
    for part in path:
        annotation = annotation.model_fields[part].annotation
    return annotation


def _match_field_path(model: type[BaseModel], rest: str) -> list[str] | None:
    for field_name, info in model.model_fields.items():
        if rest == field_name:
            return [field_name]
        sub = info.annotation
        if rest.startswith(field_name + "_") and isinstance(sub, type) and issubclass(sub, BaseModel):
            tail = _match_field_path(sub, rest[len(field_name) + 1 :])
            if tail is not None:
                return [field_name, *tail]
    return None


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_qraft_config(
    directory: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> QraftConfig:
    """`config/qraft.yaml` with `QRAFT_*` environment overrides applied."""
    path = config_folder(directory) / "qraft.yaml"
    data = read_yaml(path) if os.path.lexists(path) else {}
    environ = os.environ if environ is None else environ
    merged = _deep_merge(data, _env_overrides(QraftConfig, environ))
    # A bad value is named where it was set: the file, or the variable that overrides it.
    config = parse_model(QraftConfig, merged, path, _env_paths(QraftConfig, environ))
    try:
        load_plugins(config.plugins)
    except PluginError as exc:
        raise ConfigError(f"{path}: plugins: {exc}") from None
    return config


def load_sources(directory: Path | str | None = None) -> SourcesFile:
    """`config/sources.yaml`, with each source's options checked by its adapter type."""
    path = config_dir(directory) / "sources.yaml"
    sources = parse_model(SourcesFile, read_yaml(path), path)
    for index, source in enumerate(sources.sources):
        for check in SOURCE_CHECKS.values():
            check(source, f"{path}: sources[{index}]")
    return sources

