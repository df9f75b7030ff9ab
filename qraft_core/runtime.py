"""Where the real store and bus are chosen from configuration (for the CLI and services).

Dagster gets the same objects through its resources, which call this module.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from qraft_core.bus.base import StreamSettings
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import QraftConfig, SourcesFile, config_dir, load_qraft_config, load_sources
from qraft_core.store import ClickHouseStore, StoreLayout, open_store

log = logging.getLogger(__name__)


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
        return StreamSettings(nats.stream, nats.subject_prefix, nats.duplicate_window_s, nats.max_msg_bytes)

    def nats_url(self, start: bool = True) -> str:
        """The configured NATS URL, or the embedded server's (started if needed)."""
        if self.config.nats.url:
            return self.config.nats.url
        directory = self.data_dir / "nats"
        running = EmbeddedNats.running(directory)
        if running is not None:
            return running.url
        if not start:
            raise RuntimeError("the embedded NATS server is not running (start it with `qraft up`)")
        self._embedded_nats = EmbeddedNats(directory).start()
        log.info("started embedded nats-server at %s", self._embedded_nats.url)
        return self._embedded_nats.url

    async def connect_bus(self, start: bool = True) -> NatsBus:
        return await NatsBus(self.nats_url(start), self.stream_settings).connect()

    @asynccontextmanager
    async def bus_until_signal(self, stop: asyncio.Event) -> AsyncIterator[NatsBus]:
        """The bus for a long-running service; SIGTERM or SIGINT sets `stop` instead of killing it."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bus = await self.connect_bus()
        try:
            yield bus
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await bus.close()

    def stop_owned_services(self) -> None:
        """Stop the embedded NATS server if this runtime started it."""
        if self._embedded_nats is not None:
            self._embedded_nats.stop()
            self._embedded_nats = None
