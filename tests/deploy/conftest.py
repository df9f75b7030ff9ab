"""Helpers for checking the deployment files offline (Docker and a cluster are not used)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def interpolate(text: str, value: str = "placeholder") -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, each replaced by one value."""
    return INTERPOLATION.sub(value, text)


def unknown_cli_usage(argv: Sequence[str]) -> list[str]:
    """What in a `qraft …` command line the CLI does not know: a subcommand or an option."""
    from qraft_cli import main

    command: click.Command = main
    args = list(argv[1:])
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        if sub is None:
            return [f"unknown command {args[0]!r} in {shlex.join(argv)}"]
        command, args = sub, args[1:]
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    return [f"unknown option {arg!r} in {shlex.join(argv)}"
            for arg in args if arg.startswith("--") and arg.split("=")[0] not in options]


def mlflow_admits(argv: Sequence[str], host: str) -> bool:
    """Whether `mlflow server` started with `argv` answers a request whose Host header is `host`
    (MLflow 3 turns away other hosts than localhost and private IPs unless --allowed-hosts names them)."""
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    allowed = argv[argv.index("--allowed-hosts") + 1].split(",") if "--allowed-hosts" in argv else None
    return is_allowed_host_header(allowed or get_default_allowed_hosts(), host)
