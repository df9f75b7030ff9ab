"""Loading and validating Qraft's YAML configuration.

Every file is parsed into a pydantic model that forbids unknown keys, so a
typo is an error. Errors name the file, the key path and what was expected.
Values in `config/qraft.yaml` can be overridden by `QRAFT_<SECTION>_<KEY>`
environment variables (for example `QRAFT_NATS_URL`, `QRAFT_STORE_DSN`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_DIR_ENV = "QRAFT_CONFIG_DIR"
ENV_PREFIX = "QRAFT_"


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who has to fix it."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(Strict):
    # Empty means the embedded default: chdb://<data_dir>/clickhouse
    dsn: str = ""
    lock_timeout_s: float = Field(default=60.0, gt=0)


class NatsConfig(Strict):
    # Empty means the embedded nats-server, started on a free loopback port.
    url: str = ""
    stream: str = Field(default="QRAFT_RAW", pattern=r"^[A-Za-z0-9_\-]+$")
    subject_prefix: str = "qraft.raw"
    duplicate_window_s: int = Field(default=3600, gt=0)
    max_msg_bytes: int = Field(default=8 * 1024 * 1024, gt=0)


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

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def interval(self) -> timedelta:
        return timedelta(minutes=self.interval_minutes)


class LanderConfig(Strict):
    batch_size: int = Field(default=20_000, ge=1)
    batch_timeout_ms: int = Field(default=500, ge=1)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    durable_name: str = "qraft-lander"
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)


class CleanConfig(Strict):
    # An event time this far after its ingest time is a broken clock, not a skew.
    max_future_s: int = Field(default=300, ge=0)
    max_age_days: int = Field(default=3650, ge=1)
    # Payload fields that must hold positive finite numbers, per event type;
    # numeric strings (Binance sends prices as strings) become numbers.
    numeric_fields: dict[str, list[str]] = Field(
        default_factory=lambda: {"trade": ["p", "q"], "aggTrade": ["p", "q"]}
    )


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


class DagsterConfig(Strict):
    port: int = Field(default=3000, ge=1, le=65535)


class QraftConfig(Strict):
    data_dir: Path = Path(".qraft")
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

    @property
    def store_dsn(self) -> str:
        return self.store.dsn or f"chdb://{self.data_dir.resolve() / 'clickhouse'}"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir.resolve() / "dagster"


class SourceConfig(Strict):
    """One source in `config/sources.yaml` (the seed's name/type/endpoint/parser/transform)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    type: str
    enabled: bool = True
    endpoint: str = ""
    parser: str = "generic"
    transform: dict[str, Any] = Field(default_factory=dict)
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


def describe_validation_error(path: Path | str, error: ValidationError) -> str:
    """One line per problem: file, key path, what was expected, what was found."""
    lines = []
    for problem in error.errors():
        key = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in problem["loc"]
        ).replace(".[", "[")
        found = problem.get("input")
        expected = problem["msg"]
        if problem["type"] == "extra_forbidden":
            expected = "an unknown key (check the spelling)"
        shown = "" if isinstance(found, (dict, list)) else f" (got {found!r})"
        lines.append(f"{path}: {key or '<top>'}: {expected}{shown}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <top>: expected a mapping of keys, got {type(data).__name__}")
    return data


def parse_model(model: type[M], data: Mapping[str, Any], path: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from exc


def config_dir(explicit: Path | str | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_DIR_ENV) or "config")


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
    path = config_dir(directory) / "qraft.yaml"
    data = read_yaml(path) if path.exists() else {}
    merged = _deep_merge(data, _env_overrides(QraftConfig, os.environ if environ is None else environ))
    return parse_model(QraftConfig, merged, f"{path} (with QRAFT_* environment overrides)")


def load_sources(directory: Path | str | None = None) -> SourcesFile:
    """`config/sources.yaml`, with each source's options checked by its adapter type."""
    path = config_dir(directory) / "sources.yaml"
    sources = parse_model(SourcesFile, read_yaml(path), path)
    from qraft_core.adapters.registry import validate_source

    for index, source in enumerate(sources.sources):
        validate_source(source, f"{path}: sources[{index}]")
    return sources


def validate_all(directory: Path | str | None = None) -> list[str]:
    """Check every configuration file; returns the files checked, raises ConfigError on the first bad one."""
    base = config_dir(directory)
    checked = []
    load_qraft_config(base)
    checked.append(str(base / "qraft.yaml"))
    load_sources(base)
    checked.append(str(base / "sources.yaml"))
    # The pipeline's own files are validated by the modules that use them.
    from qraft_core.detectors.config import load_detectors
    from qraft_core.explain.templates import load_cards_config
    from qraft_core.operators.pipeline import load_preprocessing

    for name, load in (("preprocessing.yaml", load_preprocessing), ("detectors.yaml", load_detectors),
                       ("cards.yaml", load_cards_config)):
        load(base)
        checked.append(str(base / name))
    return checked
