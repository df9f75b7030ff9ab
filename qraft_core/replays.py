"""Replays in flight: one record per replay, and no two over overlapping windows at once.

Records live as JSON files under `<data_dir>/replays/`; claiming a window is
done under a file lock, so a second replay over an overlapping window is
refused with the running one named, never interleaved. A record whose process
died counts as failed, so a killed replay never blocks the next one. Records are
written whole (fsync, then rename); one that is damaged anyway (a full disk, a
hand edit) is moved aside to `<name>.damaged` with a warning, never blocking
other replays. A
background replay runs under a small watcher process that records how it
ended (exit code or signal, and the JVM crash file when CapyMOA's JVM crashed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock

from qraft_core.bus.embedded import process_alive
from qraft_core.config import ConfigError, PartitionsConfig
from qraft_core.events import iso, stable_id
from qraft_core.runtime import jvm_crash_env, jvm_crash_file
from qraft_core.scheduling import ceil_to, floor_to, partition_start

logger = logging.getLogger(__name__)
# The logger a pipeline runner tells each failed run on, in one line (the run, its failing step and why);
# a replay records what is told there while it runs.
RUN_FAILURES = "qraft_core.run_failures"


def replay_window(start: datetime, end: datetime, config: PartitionsConfig,
                  now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) widened to whole windows, or a ConfigError when it lies outside the partitions.

    Windows older than the rolling range of an open end have no Dagster partition to run in: the
    error says how large `max_partitions` must be for the range to reach back to them.
    """
    if end <= start:
        raise ConfigError(f"replay window: --end ({iso(end)}) must be after --start ({iso(start)})")
    now = now or datetime.now(UTC)
    first = partition_start(config, now)
    aligned = floor_to(start, config.interval), ceil_to(end, config.interval)
    last = config.end
    if last is None and config.start <= aligned[0] < first:
        # The range starts a whole day after `now - max_partitions windows`: a day more reaches `aligned[0]`.
        needed = -((aligned[0] - now) // config.interval) + timedelta(days=1) // config.interval
        raise ConfigError(
            f"replay window [{iso(start)}, {iso(end)}) starts before the oldest partition kept ({iso(first)}, "
            f"partitions.max_partitions {config.max_partitions}): raise partitions.max_partitions in qraft.yaml "
            f"to at least {needed} to replay it")
    if aligned[0] < first or (last is not None and aligned[1] > last):
        limit = f"[{iso(first)}, {iso(last) if last else 'now'})"
        raise ConfigError(f"replay window [{iso(start)}, {iso(end)}) lies outside the partitions {limit}")
    return aligned



class ReplayConflict(RuntimeError):
    """Another replay over an overlapping window is running."""


@dataclass
class ReplayRecord:
    id: str
    start: str
    end: str
    sources: list[str]
    status: str = "running"  # running | succeeded | failed | regression
    pid: int = 0
    started_at: str = ""
    finished_at: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return iso(start) < self.end and self.start < iso(end)


# What a stored record must hold, with the type of each; other keys are ignored.
RECORD_TYPES: dict[str, type] = {
    "id": str, "start": str, "end": str, "sources": list, "status": str, "pid": int, "started_at": str,
    "finished_at": str, "summary": dict,
}
REQUIRED = ("id", "start", "end", "sources")
JSON_NAMES = {str: "a string", list: "a list", int: "a whole number", dict: "an object"}


def is_replay_id(text: str) -> bool:
    return text.replace("-", "").isalnum()


def record_of(stored: Any) -> ReplayRecord:
    """A record from its stored JSON; a ValueError naming what is missing or of the wrong type."""
    if not isinstance(stored, dict):
        raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
    missing = [key for key in REQUIRED if key not in stored]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    known = {key: value for key, value in stored.items() if key in RECORD_TYPES}
    for key, value in known.items():
        expected = RECORD_TYPES[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"{key} should be {JSON_NAMES[expected]}, got {json.dumps(value)[:40]}")
    if not all(isinstance(source, str) for source in known["sources"]):
        raise ValueError("sources holds something other than names")
    return ReplayRecord(**known)


class ReplayRegistry:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(directory / "claims.lock"))

    def _path(self, replay_id: str) -> Path:
        if not is_replay_id(replay_id):
            raise ValueError(f"not a replay id: {replay_id!r}")
        return self.directory / f"{replay_id}.json"

    def save(self, record: ReplayRecord) -> None:
        """Write the record whole or not at all: a crash or power loss never leaves half a record."""
        path = self._path(record.id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.write(json.dumps(asdict(record), indent=1, sort_keys=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)

    def _load(self, path: Path) -> ReplayRecord | None:
        """The record in `path`; a damaged one is moved aside to `<name>.damaged` with one warning."""
        try:
            stored = json.loads(path.read_text())
            return record_of(stored)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            aside = path.with_name(path.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.warning("replay record %s is damaged (%s); moved aside to %s and skipped", path, reason, aside.name)
            return None

    def get(self, replay_id: str) -> ReplayRecord | None:
        record = self._load(self._path(replay_id))
        if record is None:
            return None
        if record.status == "running" and record.pid and not process_alive(record.pid):
            record.status = "failed"
            record.summary = {**record.summary, "error": "the replay process exited before finishing",
                              **self.crash_report(record.pid)}
        return record

    @property
    def crash_dir(self) -> Path:
        return self.directory.parent / "crash"

    def crash_report(self, pid: int) -> dict[str, str]:
        crash = jvm_crash_file(self.crash_dir, pid)
        return {"jvm_crash_file": str(crash)} if crash else {}

    def finish_if_running(self, replay_id: str, returncode: int) -> None:
        """Record how a replay process ended, unless it recorded its own result."""
        with self._lock:
            record = self._load(self._path(replay_id))
            if record is None or record.status != "running":
                return
            how = exit_description(returncode)
            self.finish(record, "failed", {**record.summary, "error": f"the replay process {how}",
                                           "exit": how, **self.crash_report(record.pid)})

    def records(self) -> list[ReplayRecord]:
        """Every readable record (damaged ones are skipped, and files that are no replay's)."""
        found = [self.get(path.stem) for path in sorted(self.directory.glob("*.json")) if is_replay_id(path.stem)]
        return [record for record in found if record is not None]

    def running(self) -> list[ReplayRecord]:
        return [record for record in self.records() if record.status == "running"]

    def claim(self, start: datetime, end: datetime, sources: list[str], replay_id: str | None = None) -> ReplayRecord:
        """Register a replay of [start, end), or raise ReplayConflict naming the overlapping one."""
        with self._lock:
            for other in self.running():
                if other.id != replay_id and other.overlaps(start, end):
                    raise ReplayConflict(
                        f"replay {other.id} of [{other.start}, {other.end}) is running (pid {other.pid}); "
                        "wait for it to finish or choose a window that does not overlap"
                    )
            now = datetime.now(UTC)
            record = self.get(replay_id) if replay_id else None
            if record is None:
                record = ReplayRecord(
                    id=replay_id or stable_id("replay", iso(start), iso(end), *sources, iso(now))[:18],
                    start=iso(start), end=iso(end), sources=sorted(sources), started_at=iso(now),
                )
            record.status, record.pid = "running", os.getpid()
            self.save(record)
            return record

    def finish(self, record: ReplayRecord, status: str, summary: dict[str, Any]) -> None:
        record.status, record.summary, record.finished_at = status, summary, iso(datetime.now(UTC))
        self.save(record)


def exit_description(returncode: int) -> str:
    """
    >>> exit_description(-11), exit_description(3)
    ('was killed by SIGSEGV', 'exited with code 3')
    """
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def launch_replay(
    registry: ReplayRegistry, worker: list[str], config_dir: Path, start: datetime, end: datetime,
    sources: list[str],
) -> ReplayRecord:
    """Claim the window, then run the replay worker on it in the background, under a watcher.

    `worker` is the command of the entry point that runs a claimed replay; it gets
    `--config-dir DIR replay ID` appended.
    """
    record = registry.claim(start, end, sources)
    command = [*worker, "--config-dir", str(config_dir), "replay", record.id]
    log = open(registry.directory / f"{record.id}.log", "ab")  # noqa: SIM115 - owned by the child
    watcher = [sys.executable, "-m", "qraft_core.replays", str(registry.directory), record.id, "--", *command]
    process = subprocess.Popen(watcher, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record.pid = process.pid
    registry.save(record)
    return record


def watch_replay(directory: Path, replay_id: str, command: list[str]) -> int:
    """Run a replay command and record its end if it could not (a crash, a signal)."""
    registry = ReplayRegistry(directory)
    child = subprocess.Popen(command, env=jvm_crash_env(registry.crash_dir, dict(os.environ)))
    returncode = child.wait()
    if returncode != 0:
        registry.finish_if_running(replay_id, returncode)
    return returncode


@dataclass
class SubprocessReplayLauncher:
    """Starts replays as background worker processes (the API's replay runner)."""

    registry: ReplayRegistry
    config_dir: Path
    partitions: PartitionsConfig
    worker: list[str]

    def launch(self, start: datetime, end: datetime, sources: list[str]) -> dict[str, str]:
        start, end = replay_window(start, end, self.partitions)
        record = launch_replay(self.registry, self.worker, self.config_dir, start, end, sources)
        return {"id": record.id, "status": record.status}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run a replay command and record how it ended.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("replay_id")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    # argparse keeps or drops the "--" before a remainder depending on the Python version.
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    sys.exit(watch_replay(arguments.directory, arguments.replay_id, command))
