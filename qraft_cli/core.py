"""Configuration, statistics, landing and ingest commands."""

from __future__ import annotations

from pathlib import Path

import click

from qraft_cli import PathOption, emit, main, validate_config
from qraft_core.events import export_json_schemas


@main.group("config")
def config_group() -> None:
    """Inspect and check configuration."""


@config_group.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def config_validate(ctx: click.Context, as_json: bool) -> None:
    """Check every configuration file; exit 2 with file, key and expectation on the first error.

    Detectors naming streams or features that no pipeline makes are warned about on stderr."""
    checked, warnings = validate_config(ctx.obj["config_dir"])
    emit({"ok": True, "checked": checked, "warnings": warnings}, as_json, "\n".join(f"ok  {path}" for path in checked))


@config_group.command("schemas")
@click.option("--out", type=PathOption(file_okay=False, path_type=Path), default=Path("config/schemas"),
              show_default=True, help="Folder to write the JSON Schemas to.")
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
def config_schemas(out: Path, as_json: bool) -> None:
    """Write the JSON Schemas of StandardEvent and PatternEvent (the seed's schemas A and B)."""
    written = [str(path) for path in export_json_schemas(out)]
    emit({"written": written}, as_json, "\n".join(f"wrote {path}" for path in written))
