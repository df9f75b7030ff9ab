"""The built-in adapter types, and the check of a source's options against its type.

Importing this module registers the built-in adapters and adds `check_source` to
the checks `load_sources` runs: configuration itself knows no adapter.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from qraft_core.adapters import database, file, rest, watcher, websocket  # noqa: F401  (they register)
from qraft_core.adapters.base import ADAPTERS, Adapter
from qraft_core.adapters.parsers import PARSERS
from qraft_core.config import SOURCE_CHECKS, ConfigError, SourceConfig, describe_validation_error
from qraft_core.registry import UnknownName


def adapter_type(name: str, where: str = "") -> type:
    try:
        return ADAPTERS[name]
    except UnknownName as exc:
        raise ConfigError(f"{where}.type: {exc}") from None


@SOURCE_CHECKS.register("adapter options")
def validate_source(source: SourceConfig, where: str) -> BaseModel:
    """The source's options parsed by its adapter type; ConfigError names the key."""
    cls = adapter_type(source.type, where)
    if source.parser not in PARSERS:
        raise ConfigError(f"{where}.parser: unknown parser {source.parser!r} (known: {', '.join(PARSERS.names())})")
    options_model: type[BaseModel] = cls.options_model  # type: ignore[attr-defined]
    try:
        options = options_model.model_validate(source.options)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(f"{where}.options", exc)) from exc
    # Checks that need more than the options (the endpoint, credential placeholders).
    check_source = getattr(cls, "check_source", None)
    if check_source is not None:
        check_source(source, options, where)
    return options


def build_adapter(source: SourceConfig, state_dir: Path, where: str = "sources.yaml") -> Adapter:
    options = validate_source(source, where)
    cls = adapter_type(source.type, where)
    return cls(source, options, state_dir)  # type: ignore[no-any-return]
