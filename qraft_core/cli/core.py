"""Configuration, statistics, landing and ingest commands."""

from __future__ import annotations

import click

from qraft_core.cli import emit, main, runtime
from qraft_core.config import validate_all


@main.group("config")
def config_group() -> None:
    """Inspect and check configuration."""


@config_group.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def config_validate(ctx: click.Context, as_json: bool) -> None:
    """Check every configuration file; exit 2 with file, key and expectation on the first error."""
    checked = validate_all(ctx.obj["config_dir"])
    emit({"ok": True, "checked": checked}, as_json, "\n".join(f"ok  {path}" for path in checked))
