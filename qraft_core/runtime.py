"""Where the real store and bus are chosen from configuration (for the CLI and services).

Dagster gets the same objects through its resources, which call this module.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from qraft_core.adapters.live import Backoff
from qraft_core.bus.base import StreamSettings
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import QraftConfig, SourcesFile, config_dir, load_qraft_config, load_sources
from qraft_core.store import ClickHouseStore, StoreLayout, open_store

log = logging.getLogger(__name__)


def jvm_crash_env(crash_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """`environ` with JVM options that put a crash report (hs_err) in `crash_dir`, named by pid."""
    crash_dir.mkdir(parents=True, exist_ok=True)
    option = f"-XX:ErrorFile={crash_dir / 'hs_err_pid%p.log'}"
    existing = environ.get("JAVA_TOOL_OPTIONS", "")
    return {**environ, "JAVA_TOOL_OPTIONS": f"{existing} {option}".strip()}


def jvm_crash_file(crash_dir: Path, pid: int) -> Path | None:
    """The JVM crash report of process `pid`, if it wrote one."""
    path = Path(crash_dir) / f"hs_err_pid{pid}.log"
    return path if path.exists() else None


@dataclass
class Runtime:
    """Configuration plus lazily opened real services."""

    config: QraftConfig
    config_path: Path
    _embedded_nats: EmbeddedNats | None = field(default=None, repr=False)

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Runtime:
        path = config_dir(directory)
        return cls(config=load_qraft_config(path), config_path=path)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir.resolve()

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def crash_dir(self) -> Path:
        """Where crashed JVMs (CapyMOA) write their hs_err files, named by pid."""
        return self.data_dir / "crash"

    @cached_property
    def store(self) -> ClickHouseStore:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sources = self.sources() if self.config.store.source_retention else None
        layout = StoreLayout.from_config(self.config, sources)
        return open_store(self.config.store_dsn, self.config.store.lock_timeout_s, layout=layout)

    def sources(self) -> SourcesFile:
        return load_sources(self.config_path)

    @property
    def stream_settings(self) -> StreamSettings:
        nats = self.config.nats
        return StreamSettings(
            nats.stream, nats.subject_prefix, nats.duplicate_window_s, nats.max_msg_bytes,
            nats.replicas, nats.max_age_s, nats.max_bytes, nats.publish_timeout_s,
        )

    def embedded_nats(self) -> EmbeddedNats:
        """The embedded server of this data directory, started (and then owned here) if none runs."""
        server = EmbeddedNats.ensure(self.data_dir / "nats", self.config.nats.max_msg_bytes)
        if server.process is not None:
            log.info("started embedded nats-server at %s", server.url)
            if self._embedded_nats is None:
                # A command that started the server stops it when it exits: no orphan servers.
                atexit.register(self.stop_owned_services)
            self._embedded_nats = server
        return server

    def nats_url(self, start: bool = True) -> str:
        """The configured NATS URL(s), or the embedded server's (started if needed)."""
        if self.config.nats.url:
            return self.config.nats.url
        if not start:
            running = EmbeddedNats.running(self.data_dir / "nats")
            if running is None:
                raise RuntimeError("the embedded NATS server is not running (start it with `qraft up`)")
            return running.url
        return self.embedded_nats().url

    async def connect_bus(self, start: bool = True, stop: asyncio.Event | None = None) -> NatsBus:
        """The bus, connected; waits until `stop` is set, or `nats.connect_wait_s` without one."""
        wait_s = None if stop is not None else self.config.nats.connect_wait_s
        return await NatsBus(self.nats_url(start), self.stream_settings).connect(stop, wait_s)

    def embedded_server(self) -> EmbeddedNats | None:
        """The embedded server this runtime started, else the one running for its data directory."""
        return self._embedded_nats or EmbeddedNats.running(self.data_dir / "nats")

    def revive_embedded_nats(self, server: EmbeddedNats) -> str | None:
        """Restart `server` on its port if it died or its store failed a write (then owned here);
        why it was restarted, also logged, or None when it was not."""
        failure = server.store_failure()  # read first: a restarted server starts a new part of its log
        if not server.revive():
            return None
        reason = (f"the embedded nats-server failed a store write; restarted it at {server.url}: {failure}"
                  if failure is not None else f"the embedded nats-server had died; restarted it at {server.url}")
        log.warning("%s", reason)
        if self._embedded_nats is None:
            atexit.register(self.stop_owned_services)
        self._embedded_nats = server
        return reason

    async def keep_embedded_alive(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        """Restart the embedded server whenever it dies; connected clients reconnect by themselves."""
        server = self.embedded_server()
        # A restart that fails (a full disk, its port taken) is tried again less and less often.
        retry = Backoff(every_s, 60.0)
        while server is not None and not stop.is_set():
            wait_s = every_s
            try:
                await asyncio.to_thread(self.revive_embedded_nats, server)
                retry.reset()
            except Exception as exc:  # noqa: BLE001 - keep watching; a later round tries again
                wait_s = retry.next()
                log.error("could not restart the embedded nats-server: %s; trying again in %.0fs", exc, wait_s)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    @asynccontextmanager
    async def bus_until_signal(self, stop: asyncio.Event) -> AsyncIterator[NatsBus]:
        """The bus for a long-running service; SIGTERM or SIGINT sets `stop` instead of killing it,
        also while it is still connecting. The embedded server, if used, is kept alive meanwhile."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = None
        try:
            bus = await self.connect_bus(stop=stop)
            if not self.config.nats.url:
                watchdog = asyncio.create_task(self.keep_embedded_alive(stop))
            try:
                yield bus
            finally:
                await bus.close()
        finally:
            if watchdog is not None:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def stop_owned_services(self) -> None:
        """Stop the embedded NATS server if this runtime started it."""
        if self._embedded_nats is not None:
            self._embedded_nats.stop()
            self._embedded_nats = None
