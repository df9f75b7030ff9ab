"""Configured sources: their status, and adding or replacing one in sources.yaml.

A running `qraft sources run` (or `qraft up`) picks the edit up by itself: the
supervisor follows the file's content.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qraft_core.audit import record_audit
from qraft_core.config import SOURCE_CHECKS, ConfigError, SourceConfig, load_sources, read_yaml
from qraft_core.sources_registry import source_status
from qraft_core.store.base import EventStore


def merged_sources(path: Path, source: SourceConfig) -> tuple[Any, dict[str, Any], str]:
    """(the entry `source` replaces or None, its new entry, the new text of the file at `path`)."""
    data = read_yaml(path)
    entries = list(data.get("sources") or [])
    new_entry = source.model_dump(mode="json", exclude_defaults=True)
    index = next(
        (i for i, e in enumerate(entries) if isinstance(e, dict) and e.get("name") == source.name),
        None,
    )
    before = entries[index] if index is not None else None
    if index is None:
        entries.append(new_entry)
    else:
        entries[index] = new_entry
    return before, new_entry, yaml.safe_dump({**data, "sources": entries}, sort_keys=False, allow_unicode=True)


@dataclass
class SourceService:
    config_path: Path
    store: EventStore
    # Held while sources.yaml is rewritten: two writers must not both read the old file and each
    # drop the other's edit. Callers serving requests in threads share one lock.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def status(self) -> list[dict[str, Any]]:
        """One row per configured source: owner, status, last event time, events/s, errors."""
        return source_status(self.store, load_sources(self.config_path).sources)

    def put(self, source: SourceConfig, actor: str) -> dict[str, Any]:
        """Add `source`, or replace the one of the same name; the whole file is validated before it
        replaces the old one (a ConfigError leaves it untouched). Recorded in the audit log."""
        path = self.config_path / "sources.yaml"
        with self.lock:
            for check in SOURCE_CHECKS.values():  # named as the caller knows it, not by its place in the file
                check(source, f"{path}: sources[{source.name!r}]")
            before, new_entry, text = merged_sources(path, source)
            with tempfile.TemporaryDirectory() as scratch:
                copy = Path(scratch) / "sources.yaml"
                copy.write_text(text)
                try:
                    load_sources(scratch)
                except ConfigError as exc:  # the rest of the file: named as it is on disk
                    raise ConfigError(str(exc).replace(str(copy), str(path))) from None
            fd, staged = tempfile.mkstemp(dir=path.parent, prefix=".sources.", suffix=".yaml")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(staged, path)
        record_audit(self.store, actor, "config.sources", source.name, before, new_entry)
        return {"source": new_entry, "created": before is None}
