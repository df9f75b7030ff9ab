"""Adapter types by name, and the check of a source's options against its type."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from qraft_core.adapters.base import Adapter
from qraft_core.adapters.parsers import PARSERS
from qraft_core.config import ConfigError, SourceConfig, describe_validation_error

ADAPTER_TYPES: dict[str, type] = {}


def register_adapter(cls: type) -> type:
    ADAPTER_TYPES[cls.type_name] = cls  # type: ignore[attr-defined]
    return cls


def _load_builtin() -> None:
    # Importing the modules registers their adapter classes.
    from qraft_core.adapters import database, file, rest, watcher, websocket  # noqa: F401


def adapter_type(name: str, where: str = "") -> type:
    _load_builtin()
    try:
        return ADAPTER_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTER_TYPES))
        raise ConfigError(f"{where}.type: unknown source type {name!r} (known: {known})") from None


def validate_source(source: SourceConfig, where: str) -> BaseModel:
    """The source's options parsed by its adapter type; ConfigError names the key."""
    cls = adapter_type(source.type, where)
    if source.parser not in PARSERS:
        raise ConfigError(
            f"{where}.parser: unknown parser {source.parser!r} (known: {', '.join(sorted(PARSERS))})"
        )
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
