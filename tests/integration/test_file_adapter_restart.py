"""Restarting the file adapter mid-file, on a real NATS server and a real chDB store:
no event is missing and none is duplicated in raw_events."""

import asyncio
import json
from pathlib import Path

from qraft_core.adapters.file import FileAdapter
from qraft_core.bus.base import StreamSettings
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import LanderConfig, SourceConfig
from qraft_core.lander import Lander

TOTAL = 5_000


class StopAfter:
    """A publisher that asks the adapter to stop after `batches` published messages."""

    def __init__(self, bus: NatsBus, batches: int, stop: asyncio.Event) -> None:
        self.bus, self.left, self.stop = bus, batches, stop

    async def publish_events(self, source, events):  # type: ignore[no-untyped-def]
        await self.bus.publish_events(source, events)
        self.left -= 1
        if self.left <= 0:
            self.stop.set()

    async def publish_raw(self, source, data, message_id=None):  # type: ignore[no-untyped-def]
        await self.bus.publish_raw(source, data, message_id)


def _write_trades(path: Path) -> None:
    with path.open("w") as handle:
        for trade_id in range(1, TOTAL + 1):
            handle.write(json.dumps({"e": "trade", "s": "BTCUSDT", "t": trade_id, "p": "42000.5", "q": "0.01",
                                     "T": 1767571200000 + trade_id * 10, "m": trade_id % 2 == 0}) + "\n")


def test_restart_mid_file_lands_every_event_exactly_once(tmp_path, nats_server, chdb_store):
    source = SourceConfig(name="binance_spot", type="file", endpoint=str(tmp_path / "trades.jsonl"),
                          parser="binance_trade", options={"batch_size": 500})
    _write_trades(Path(source.endpoint))
    settings = StreamSettings(stream="QRAFT_RESTART")

    async def scenario() -> dict[str, int]:
        bus = await NatsBus(nats_server.url, settings).connect()
        try:
            options = FileAdapter.options_model.model_validate(source.options)
            stop = asyncio.Event()
            first = await FileAdapter(source, options, tmp_path / "state").run(StopAfter(bus, 3, stop), stop)
            # A new process: a new adapter object reads the resume position from disk.
            second = await FileAdapter(source, options, tmp_path / "state").run(bus, asyncio.Event())
            await bus.subscribe("lander-restart")
            lander = Lander(bus, chdb_store, LanderConfig(batch_timeout_ms=200),
                            subject_prefix=settings.subject_prefix)
            while await lander.land_once():
                pass
            return {"first": first.published, "second": second.published, "skipped": second.skipped}
        finally:
            await bus.close()

    counts = asyncio.run(scenario())
    assert counts["first"] == 1_500  # three batches of 500, then the stop
    assert counts == {"first": 1_500, "second": TOTAL - 1_500, "skipped": 1_500}
    assert chdb_store.count("raw_events") == {"": TOTAL}
    ids = chdb_store.select("raw_events", columns=["event_id"])["event_id"].to_list()
    assert sorted(ids) == sorted(f"binance_spot:BTCUSDT:{i}" for i in range(1, TOTAL + 1))
