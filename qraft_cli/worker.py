"""Background work started by `qraft replay` and the API: `python -m qraft_cli.worker --config-dir DIR
replay ID` runs the replay claimed as ID through the replay service (its watcher, in
`qraft_core.replays`, records a crash)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from qraft_cli import pipeline_services
from qraft_core.config import ConfigError
from qraft_core.services.replay import ReplayRequest


def run_claimed_replay(config_dir: Path, replay_id: str) -> int:
    """0 when the replay succeeded, 1 when it failed, 2 when there is no such claimed replay."""
    try:
        record = pipeline_services(config_dir).replay_registry.get(replay_id)  # before Dagster loads
        if record is None:
            raise ConfigError(f"no replay {replay_id} was claimed")
        services = pipeline_services(config_dir, runs_pipeline=True)
        request = ReplayRequest(datetime.fromisoformat(record.start), datetime.fromisoformat(record.end),
                                tuple(record.sources), actor=os.environ.get("USER", "cli"))
        result = services.replays.run(request, replay_id=record.id)
    except (ConfigError, ValueError) as exc:  # a bad id or configuration: one line in the replay's log
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"replay {record.id}: {result.status}")
    return 0 if result.status == "succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qraft_cli.worker", description=__doc__)
    parser.add_argument("--config-dir", type=Path, required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="Run the replay claimed under this id.")
    replay.add_argument("replay_id")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_claimed_replay(arguments.config_dir, arguments.replay_id)


if __name__ == "__main__":
    sys.exit(main())
