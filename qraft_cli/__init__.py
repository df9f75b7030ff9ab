"""The `qraft` command."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from qraft_core.config import CONFIG_DIR_ENV, ConfigError


class PathOption(click.Path):
    """`click.Path` refusing an empty value: `Path("")` is the current folder, which an empty
    `--out ""` (a variable left unset) never means."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path names nothing (write . for the current folder)", param, ctx)
        return super().convert(value, param, ctx)


class QraftGroup(click.Group):
    """Turns configuration, store and bus errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from qraft_core.bus.base import BusError
        from qraft_core.redact import redact
        from qraft_core.store.base import StoreError

        started = datetime.now()  # the embedded nats-server logs in local time
        try:
            return super().invoke(ctx)
        except (ConfigError, StoreError, BusError) as exc:
            said = bus_server_error(ctx, started) if isinstance(exc, BusError) else None
            click.echo(f"error: {redact(str(exc))}" + (f" (the embedded nats-server logged: {redact(said)})"
                                                        if said else ""), err=True)
            sys.exit(2)
        except OSError as exc:
            # A folder that cannot be written, a disk that is full: the file and the reason, no traceback.
            click.echo(f"error: {redact(os_problem(exc))}", err=True)
            sys.exit(2)


def validate_config(directory: str) -> tuple[list[str], list[str]]:
    """Check every configuration file (ConfigError on the first bad one), say on stderr what looks wrong
    but can run (see `config_warnings`); returns the files checked and the warnings."""
    from qraft_core.validation import config_warnings, validate_all

    checked = validate_all(directory)
    warnings = config_warnings(directory)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return checked, warnings


# "[pid] 2026/11/30 23:03:45.231414 [ERR] message", as nats-server writes its log.
_SERVER_ERROR = re.compile(r"^\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)\.\d+ \[(?:ERR|FTL)\] (.+)$")


def bus_server_error(ctx: click.Context, since: datetime) -> str | None:
    """The last error the embedded nats-server of this configuration logged since the command started
    (a full disk, a damaged stream store): a publish that timed out says nothing of the cause."""
    from qraft_core.config import load_qraft_config

    try:
        config = load_qraft_config(ctx.obj["config_dir"]) if ctx.obj else None
        log = config.data_dir / "nats" / "nats-server.log" if config and not config.nats.url else None
        return last_server_error(log.read_bytes()[-65536:].decode(errors="replace"), since) if log else None
    except (ConfigError, OSError):
        return None


def last_server_error(log: str, since: datetime) -> str | None:
    r"""The message of the last error line of a nats-server log written at or after `since`.

    >>> log = ("[7] 2026/11/30 23:03:45.231414 [ERR] JetStream failed to store a msg: no space left on device\n"
    ...        "[7] 2026/11/30 23:03:46.000000 [INF] Server is ready\n")
    >>> last_server_error(log, datetime(2026, 11, 30, 23, 3)), last_server_error(log, datetime(2026, 11, 30, 23, 4))
    ('JetStream failed to store a msg: no space left on device', None)
    """
    found = None
    for line in log.splitlines():
        match = _SERVER_ERROR.match(line)
        if match and datetime.strptime(match[1], "%Y/%m/%d %H:%M:%S") >= since.replace(microsecond=0):
            found = match[2]
    return found


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


@contextmanager
def json_errors(as_json: bool) -> Iterator[None]:
    """With --json, a refusal inside (a usage error, a bad configuration, a store or file error) is
    `{"error": "..."}` on stdout and exit 2, for the script reading stdout; without, click and
    `QraftGroup` print it on stderr as for any command."""
    from qraft_core.bus.base import BusError
    from qraft_core.redact import redact
    from qraft_core.store.base import StoreError

    if not as_json:
        yield
        return
    try:
        yield
    except (click.ClickException, ConfigError, StoreError, BusError, OSError) as exc:
        emit({"error": redact(os_problem(exc) if isinstance(exc, OSError) else str(exc))}, as_json)
        sys.exit(2)


def checked_config_dir(ctx: click.Context) -> str:
    """The command's configuration folder, every file of it checked once (ConfigError): a damaged
    file stops any command, not only those that read it."""
    from qraft_core.validation import validate_all

    if not ctx.obj.get("config_checked"):
        # Only errors stop a command: what a source's options merely look like (a cursor without a
        # tiebreak) is `config validate`'s to say, not a line on every command's stderr.
        adapters = logging.getLogger("qraft_core.adapters")
        level = adapters.level
        adapters.setLevel(logging.ERROR)
        try:
            validate_all(ctx.obj["config_dir"])
        finally:
            adapters.setLevel(level)
        ctx.obj["config_checked"] = True
    return str(ctx.obj["config_dir"])


def runtime(ctx: click.Context) -> Any:
    from qraft_core.runtime import Runtime

    return Runtime.load(checked_config_dir(ctx))


# The entry point that runs a claimed replay in the background (for `qraft replay` and `qraft api`).
REPLAY_WORKER = [sys.executable, "-m", "qraft_cli.worker"]


def services(ctx: click.Context, runs_pipeline: bool = False, ephemeral: bool = False) -> Any:
    """The services of this command's configuration (`qraft_core.bootstrap`); with `runs_pipeline`,
    windows are materialized in this process by Dagster (on a throw-away instance when `ephemeral`)."""
    return pipeline_services(Path(checked_config_dir(ctx)), runs_pipeline, ephemeral)


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
