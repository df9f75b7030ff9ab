"""Keeping things running: every enabled source as its own task, and the processes of `qraft up`.

The source supervisor runs each source and follows `sources.yaml` as it changes. A crashed adapter is restarted with backoff; the supervisor itself never
stops for a source. Edits to `sources.yaml` are picked up by polling its
content: added sources start, changed ones restart, removed or disabled ones
stop, and the others are not touched. An invalid edit is reported and the
running set stays as it was. With a store, every change goes to `audit_log`
and the source registry.

The process supervisor keeps child processes running the same way: one that
exits is restarted with backoff; stopping it ends them all. Each child leads a
process group of its own, and the whole group goes with it: what a child started
(`dagster dev`'s webserver, daemon and code server) would otherwise outlive it and
hold its port and instance against the restarted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qraft_core.adapters.live import Backoff, StateNotSaved, sleep_or_stop
from qraft_core.adapters.registry import build_adapter
from qraft_core.audit import record_audit
from qraft_core.bus.base import BusError, Publisher
from qraft_core.config import ConfigError, SourceConfig, load_sources
from qraft_core.fault_signals import terminated_with_parent
from qraft_core.metrics import ADAPTER_ERRORS
from qraft_core.process_lock import LockHeld, hold_lock
from qraft_core.sources_registry import upsert_sources
from qraft_core.store.base import EventStore

log = logging.getLogger(__name__)

ACTOR = "supervisor"


@dataclass
class RunningSource:
    config: SourceConfig
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    status: str = "starting"
    restarts: int = 0
    last_error: str = ""


def _fingerprint(source: SourceConfig) -> str:
    return source.model_dump_json()


class SourceSupervisor:
    """The set of running sources, kept in line with `config_dir/sources.yaml`."""

    def __init__(
        self,
        config_dir: Path,
        state_dir: Path,
        publisher: Publisher,
        store: EventStore | None = None,
        poll_s: float = 1.0,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.state_dir = Path(state_dir)
        self.publisher = publisher
        self.store = store
        self.poll_s = poll_s
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.stop_grace_s = stop_grace_s
        self.running: dict[str, RunningSource] = {}
        self.digest = ""
        self.reloads = 0
        self.rejected = 0

    @property
    def path(self) -> Path:
        return self.config_dir / "sources.yaml"

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"status": entry.status, "restarts": entry.restarts, "last_error": entry.last_error}
            for name, entry in sorted(self.running.items())
        }

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.reload_if_changed()
                if await sleep_or_stop(stop, self.poll_s):
                    break
        finally:
            await asyncio.gather(*(self._stop(name) for name in list(self.running)))

    async def reload_if_changed(self) -> bool:
        """Apply `sources.yaml` if its content changed; False when unchanged or invalid."""
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            content = f"unreadable: {exc}".encode()
        digest = hashlib.sha256(content).hexdigest()
        if digest == self.digest:
            return False
        self.digest = digest
        try:
            sources = load_sources(self.config_dir)
        except ConfigError as exc:
            self.rejected += 1
            log.error("%s was not applied; the %d running source(s) stay as they were: %s",
                      self.path, len(self.running), exc)
            await self._audit("sources.reload_rejected", str(self.path), detail=str(exc))
            return False
        self.reloads += 1
        await self._apply(sources.sources, first=self.reloads == 1)
        return True

    async def _apply(self, sources: list[SourceConfig], first: bool) -> None:
        wanted = {s.name: s for s in sources if s.enabled}
        for name in [n for n in self.running if n not in wanted]:
            before = self.running[name].config
            await self._stop(name)
            await self._audit("source.remove", name, before=before.model_dump(mode="json"))
            if name not in {s.name for s in sources}:
                await self._store_call(upsert_sources, [before], "removed")
        # Registry rows first: a source failing right after its start then has the newer row.
        statuses = {s.name: "running" if s.enabled else "disabled" for s in sources}
        await self._store_call(upsert_sources, sources, statuses)
        for name, config in wanted.items():
            entry = self.running.get(name)
            if entry is None:
                self._start(config)
                if not first:
                    await self._audit("source.add", name, after=config.model_dump(mode="json"))
            elif _fingerprint(entry.config) != _fingerprint(config):
                await self._stop(name)
                self._start(config)
                await self._audit("source.change", name, before=entry.config.model_dump(mode="json"),
                                  after=config.model_dump(mode="json"))
        if first:
            await self._audit("sources.start", str(self.path), after=sorted(wanted))

    def _start(self, config: SourceConfig) -> None:
        entry = RunningSource(config)
        entry.task = asyncio.create_task(self._keep_running(entry), name=f"source:{config.name}")
        self.running[config.name] = entry
        log.info("source %s (%s) started", config.name, config.type, extra={"source": config.name})

    async def _stop(self, name: str) -> None:
        entry = self.running.pop(name)
        entry.stop.set()
        if entry.task is None:
            return
        done, _ = await asyncio.wait({entry.task}, timeout=self.stop_grace_s)
        if not done:
            log.warning("source %s did not stop within %ss; cancelling it", name, self.stop_grace_s)
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)
        log.info("source %s stopped", name, extra={"source": name})

    async def _keep_running(self, entry: RunningSource) -> None:
        """Run the adapter; restart it with backoff whenever it fails."""
        name = entry.config.name
        backoff = Backoff(self.restart_initial_s, self.restart_max_s)
        while not entry.stop.is_set():
            started = time.monotonic()
            try:
                adapter = build_adapter(entry.config, self.state_dir, f"{self.path}: source {name}")
                if entry.status == "failing":
                    await self._store_call(upsert_sources, [entry.config], "running")
                entry.status = "running"
                await adapter.run(self.publisher, entry.stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one failing source never stops the others
                entry.restarts += 1
                if entry.status != "failing":
                    await self._store_call(upsert_sources, [entry.config], "failing")
                entry.status = "failing"
                entry.last_error = f"{type(exc).__name__}: {exc}"
                ADAPTER_ERRORS.labels(name, "crash").inc()
                if time.monotonic() - started > self.restart_max_s:
                    backoff.reset()  # it ran well for a while: this is a fresh failure
                delay = backoff.next()
                log.error("source %s failed (%s); restarting in %.2fs", name, entry.last_error, delay,
                          exc_info=not isinstance(exc, (ConfigError, BusError, StateNotSaved)), extra={"source": name})
                if await sleep_or_stop(entry.stop, delay):
                    break
                continue
            if not entry.stop.is_set():
                entry.status = "finished"  # a bounded source (a file replay) reached its end
                await self._store_call(upsert_sources, [entry.config], "finished")
                log.info("source %s finished", name, extra={"source": name})
                return
        entry.status = "stopped"

    async def _audit(self, action: str, target: str, before: Any = None, after: Any = None,
                     detail: Any = None) -> None:
        await self._store_call(record_audit, ACTOR, action, target, before, after, detail)

    async def _store_call(self, function: Callable[..., Any], *args: Any) -> None:
        if self.store is None:
            return
        try:
            await asyncio.to_thread(function, self.store, *args)
        except Exception as exc:  # noqa: BLE001 - a store outage must not stop ingestion
            log.warning("could not record %s in the store: %s", function.__name__, exc)


async def supervise_sources(
    config_dir: Path,
    state_dir: Path,
    publisher: Publisher,
    stop: asyncio.Event,
    store: EventStore | None = None,
    poll_s: float = 1.0,
) -> None:
    """Run every enabled source of `config_dir/sources.yaml` until `stop` is set, reloading on edits."""
    await SourceSupervisor(config_dir, state_dir, publisher, store, poll_s).run(stop)


@dataclass
class ChildProcess:
    command: list[str]
    log_file: Path
    backoff: Backoff
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when it exited or was told to: the monotonic time it is due to restart
    kill_at: float | None = None  # told to stop: the monotonic time its group is killed if still running


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether `process` has ended, without reaping it: while it is not reaped its pid, which is also
    its process group's id, cannot be given to another process, so the group can be killed safely."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the process group of a child that has ended, then reap the child."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # the group is already empty
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class ProcessSupervisor:
    """Child processes, each with its output appended to its own log file, restarted with
    backoff when they exit, until `stop`."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], log_dir: Path,
                 restart_initial_s: float = 1.0, restart_max_s: float = 60.0, stop_grace_s: float = 20.0) -> None:
        self.env = env
        self.stop_grace_s = stop_grace_s
        self.children = {name: ChildProcess(command, log_dir / f"{name}.log", Backoff(restart_initial_s, restart_max_s))
                         for name, command in commands.items()}
        self.lock_file = log_dir / "supervisor.lock"
        self._lock: int | None = None

    def take_lock(self) -> None:
        """One supervisor per log folder (one data directory): a second one would run a second lander
        and second sources on the same stream and files. The kernel drops the lock of a killed
        supervisor, so a file left behind by one does not count. Taken by `start` if not before."""
        if self._lock is not None:
            return
        try:
            self._lock = hold_lock(self.lock_file)
        except LockHeld as held:
            raise BlockingIOError(errno.EWOULDBLOCK, f"held by a running `qraft up` (pid {held.holder}); "
                                  "stop it before starting another on this data directory",
                                  str(self.lock_file)) from None

    def _spawn(self, child: ChildProcess) -> None:
        child.log_file.parent.mkdir(parents=True, exist_ok=True)
        with child.log_file.open("ab") as log_file:  # the child keeps its own copy of the handle
            # A session of its own: the child leads a process group that holds whatever it starts.
            child.process = subprocess.Popen(child.command, env=self.env, stdout=log_file,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=terminated_with_parent())
        child.started_at, child.restart_at, child.kill_at = time.monotonic(), None, None

    def start(self) -> None:
        self.take_lock()
        for child in self.children.values():
            self._spawn(child)

    def _schedule_restart(self, child: ChildProcess, now: float) -> float:
        if now - child.started_at > child.backoff.maximum:
            child.backoff.reset()  # it ran well for a while: this is a fresh failure
        delay = child.backoff.next()
        child.restart_at = now + delay
        return delay

    def restart(self, name: str, reason: str, report: Callable[[str], None]) -> None:
        """Restart a child that runs but no longer works: SIGTERM to its process group now, SIGKILL
        once the grace time has passed, then a new one after its backoff (never blocks)."""
        child = self.children[name]
        if child.process is None or child.restart_at is not None or _exited(child.process):
            return  # already ending: `check` restarts it
        now = time.monotonic()
        delay = self._schedule_restart(child, now)
        report(f"{name} {reason}; restarting it in {delay:.0f}s")
        os.killpg(child.process.pid, signal.SIGTERM)
        child.kill_at = now + self.stop_grace_s

    def check(self, report: Callable[[str], None]) -> None:
        """Restart the children that exited once their backoff has passed, after killing what is left
        of their process groups (never blocks)."""
        now = time.monotonic()
        for name, child in self.children.items():
            if child.process is None:
                continue
            if not _exited(child.process):
                if child.kill_at is not None and now >= child.kill_at:
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.kill_at = None
                continue
            _end_group(child.process)
            if child.restart_at is None:
                delay = self._schedule_restart(child, now)
                report(f"{name} exited with {child.process.returncode}; restarting in {delay:.0f}s")
            elif now >= child.restart_at:
                self._spawn(child)

    def stop(self) -> None:
        """SIGTERM every child's process group, then SIGKILL those still running after the grace time,
        and what is left of each group."""
        processes = [c.process for c in self.children.values() if c.process is not None]
        for process in processes:
            if not _exited(process):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for process in processes:
            while not _exited(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            _end_group(process)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
