"""`/sources` and `/config/sources`: configured sources, their status, and adding one."""

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends

from qraft_core.api.context import ApiContext, errors
from qraft_core.audit import record_audit
from qraft_core.config import SourceConfig, load_sources, read_yaml
from qraft_core.events import iso


def sources_router(ctx: ApiContext) -> APIRouter:
    reader, writer = ctx.dependencies()
    router = APIRouter(tags=["sources"])

    @router.get("/sources", dependencies=[Depends(reader)], responses=errors(400, 401, 403, 503))
    def get_sources() -> dict[str, Any]:
        """Configured sources with their registry status and newest landed event."""
        sources = load_sources(ctx.runtime.config_path)
        with ctx.store.session():
            registry = {
                row["name"]: row
                for row in ctx.store.select("source_registry").iter_rows(named=True)
            }
            newest = ctx.store.max_time("raw_events", "source")
        return {
            "sources": [
                {
                    **source.model_dump(mode="json", exclude={"credentials"}),
                    "credentials": sorted(source.credentials),
                    "status": registry.get(source.name, {}).get("status", "unregistered"),
                    "last_event_at": iso(newest[source.name]) if source.name in newest else None,
                }
                for source in sources.sources
            ]
        }

    @router.post("/config/sources", responses=errors(400, 401, 403, 503))
    def post_source(source: SourceConfig, actor: Annotated[str, Depends(writer)]) -> dict[str, Any]:
        """Add a source or replace the one with the same name in sources.yaml (validated first)."""
        path = ctx.runtime.config_path / "sources.yaml"
        with ctx.sources_lock:
            before, new_entry, text = _merged(path, source)
            with tempfile.TemporaryDirectory() as scratch:
                (Path(scratch) / "sources.yaml").write_text(text)
                load_sources(scratch)
            fd, staged = tempfile.mkstemp(dir=path.parent, prefix=".sources.", suffix=".yaml")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(staged, path)
        record_audit(ctx.store, actor, "config.sources", source.name, before, new_entry)
        return {"source": new_entry, "created": before is None}

    return router


def _merged(path: Path, source: SourceConfig) -> tuple[Any, dict[str, Any], str]:
    """(the entry replaced or None, the new entry, the new file's text)."""
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
    return (
        before,
        new_entry,
        yaml.safe_dump({**data, "sources": entries}, sort_keys=False, allow_unicode=True),
    )
