"""The `qraft` command."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from qraft_core.config import CONFIG_DIR_ENV, ConfigError


class QraftGroup(click.Group):
    """Turns configuration, store and bus errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from qraft_core.bus.base import BusError
        from qraft_core.redact import redact
        from qraft_core.store.base import StoreError

        try:
            return super().invoke(ctx)
        except (ConfigError, StoreError, BusError) as exc:
            click.echo(f"error: {redact(str(exc))}", err=True)
            sys.exit(2)
        except OSError as exc:
            # A folder that cannot be written, a disk that is full: the file and the reason, no traceback.
            click.echo(f"error: {redact(os_problem(exc))}", err=True)
            sys.exit(2)


def os_problem(exc: OSError) -> str:
    """An operating system error as one line naming the file.

    >>> os_problem(PermissionError(13, "Permission denied", "/data/store"))
    '/data/store: Permission denied'
    >>> os_problem(OSError("no space"))
    'no space'
    """
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


@click.group(cls=QraftGroup)
@click.option("--config-dir", envvar="QRAFT_CONFIG_DIR", default="config", show_default=True,
              help="Folder holding qraft.yaml, sources.yaml, preprocessing.yaml and detectors.yaml.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, config_dir: str, verbose: bool) -> None:
    """Qraft: pattern discovery on live event streams."""
    from qraft_core.redact import install_redaction

    install_redaction()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries Qraft embeds (MLflow's migrations, httpx) are only interesting when verbose.
    for noisy in ("alembic", "httpx", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = {"config_dir": config_dir}


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    """Print JSON for scripts, or the human rendering."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(human if human is not None else json.dumps(data, indent=2, default=str))


def runtime(ctx: click.Context) -> Any:
    from qraft_core.runtime import Runtime

    return Runtime.load(ctx.obj["config_dir"])


# The entry point that runs a claimed replay in the background (for `qraft replay` and `qraft api`).
REPLAY_WORKER = [sys.executable, "-m", "qraft_cli.worker"]


def services(ctx: click.Context, runs_pipeline: bool = False, ephemeral: bool = False) -> Any:
    """The services of this command's configuration (`qraft_core.bootstrap`); with `runs_pipeline`,
    windows are materialized in this process by Dagster (on a throw-away instance when `ephemeral`)."""
    return pipeline_services(Path(ctx.obj["config_dir"]), runs_pipeline, ephemeral)


def pipeline_services(config_dir: Path, runs_pipeline: bool = False, ephemeral: bool = False) -> Any:
    from qraft_core.bootstrap import bootstrap
    from qraft_core.runtime import Runtime

    rt = Runtime.load(config_dir)
    runner = None
    if runs_pipeline:
        point_dagster_at(rt.config_path)
        from qraft_dagster.runner import DagsterPipelineRunner

        runner = DagsterPipelineRunner(rt, ephemeral)
    return bootstrap(rt, runner=runner, replay_worker=REPLAY_WORKER)


def point_dagster_at(config_dir: Path) -> None:
    """Make Dagster processes started from here (daemon, webserver, run workers) read `config_dir`."""
    os.environ[CONFIG_DIR_ENV] = str(config_dir.resolve())


def _register_commands() -> None:
    # Every other module of this package adds its commands to `main` when imported.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):  # __main__ runs the command group when imported
            continue
        importlib.import_module(f"{__name__}.{module.name}")


_register_commands()
