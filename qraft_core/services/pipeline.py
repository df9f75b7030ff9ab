"""Running the pipeline: file sources to the bus, the lander into the store, windows through the runner.

Shared by `qraft demo`, `qraft analyze`, `qraft land`, the test set-ups and
anything else that needs data end to end. The partitioned assets run through
the injected `PipelineRunner`.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from qraft_core.adapters.registry import build_adapter
from qraft_core.config import ConfigError
from qraft_core.lander import Lander, LanderStats
from qraft_core.redact import redact
from qraft_core.runtime import Runtime
from qraft_core.services.ports import Bus, PipelineRunner, WindowRuns
from qraft_core.store.base import Filter

Echo = Callable[[str], None]

# What a run from scratch removes from the data directory: the store, the bus, adapter state, Dagster.
DATA_PARTS = ("clickhouse", "clickhouse.lock", "nats", "state", "dagster")


@asynccontextmanager
async def _connected(rt: Runtime, bus: Bus | None) -> AsyncIterator[Bus]:
    """`bus` as given (its owner closes it), or the configured one, connected here and closed after."""
    if bus is not None:
        yield bus
        return
    connected = await rt.connect_bus()
    try:
        yield connected
    finally:
        await connected.close()


async def publish_sources(rt: Runtime, echo: Echo = lambda text: None,
                          bus: Bus | None = None) -> dict[str, dict[str, int]]:
    """Replay every enabled file source into the bus (the configured one without `bus`), as fast as possible."""
    published: dict[str, dict[str, int]] = {}
    async with _connected(rt, bus) as target:
        for source in rt.sources().sources:
            if not source.enabled or source.type != "file":
                continue
            adapter = build_adapter(source, rt.state_dir)
            stats = await adapter.run(target, asyncio.Event())
            published[source.name] = {"published": stats.published, "dead_lettered": stats.dead_lettered}
            echo(f"  {source.name}: published {stats.published} events, "
                 f"{stats.dead_lettered} unparseable records as dead letters")
    return published


async def run_lander(rt: Runtime, until_idle: bool = False, stop: asyncio.Event | None = None,
                     bus: Bus | None = None) -> LanderStats:
    """Consume the bus into the store until stopped; the configured bus also stops on SIGTERM/SIGINT."""
    stop = stop or asyncio.Event()
    if bus is not None:
        return await _land(rt, bus, stop, until_idle)
    async with rt.bus_until_signal(stop) as connected:
        return await _land(rt, connected, stop, until_idle)


async def _land(rt: Runtime, bus: Bus, stop: asyncio.Event, until_idle: bool) -> LanderStats:
    lander_config = rt.config.lander
    await bus.subscribe(lander_config.durable_name)
    lander = Lander(
        bus, rt.store, lander_config,
        subject_prefix=rt.config.nats.subject_prefix, interval=rt.config.partitions.interval,
    )
    return await lander.run(stop, until_idle=until_idle)


async def reset_consumer(rt: Runtime, bus: Bus | None = None) -> bool:
    """Delete the lander's consumer, so the next lander reads the stream from its first message."""
    async with _connected(rt, bus) as target:
        return await target.delete_consumer(rt.config.lander.durable_name)


def table_counts(rt: Runtime) -> dict[str, Any]:
    """Row counts and freshness of every table, for `qraft stats` and the demo summary."""
    from qraft_core.store.schema import TABLES, spec

    store = rt.store
    spec("raw_events")  # loads the specs of every migration
    with store.session():
        counts: dict[str, Any] = {name: store.count(name).get("", 0) for name in sorted(TABLES)}
        by_source = store.count("raw_events", group_by="source")
        latest = {k: v.isoformat() for k, v in store.max_time("raw_events", "source").items()}
        dead = store.count("dead_letters", group_by="stage")
        patterns = store.count("pattern_events", group_by="type")
    return {
        "tables": counts,
        "raw_events_by_source": by_source,
        # The watermark per source: the newest event time landed.
        "latest_event_time": latest,
        "dead_letters_by_stage": dead,
        "pattern_events_by_type": patterns,
    }


def top_cards(rt: Runtime, count: int = 3) -> list[str]:
    """The markdown cards of the most confident finding of each type (up to `count`)."""
    with rt.store.session():
        found = rt.store.select("pattern_events", columns=["pattern_id", "type", "confidence"],
                                order_by=("confidence", "pattern_id"), descending=True)
        best: dict[str, str] = {}
        for pattern_id, kind, _ in found.iter_rows():
            best.setdefault(kind, pattern_id)
        chosen = list(best.values())[:count]
        cards = rt.store.select("pattern_cards", columns=["pattern_id", "markdown"], where=[
            Filter("pattern_id", "in", chosen), Filter("lang", "=", rt.config.explain.language),
            Filter("mode", "=", "human"),
        ])
    by_id = dict(cards.iter_rows())
    return [by_id[p] for p in chosen if p in by_id]


def fresh_data_dir(rt: Runtime) -> None:
    """Remove the store, bus, adapter state and Dagster instance of `rt`'s data directory."""
    for name in DATA_PARTS:
        target = rt.data_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@dataclass
class PipelineService:
    rt: Runtime
    runner: PipelineRunner | None = None
    bus: Bus | None = None  # None: the configured NATS bus, connected for each step

    def require_runner(self) -> PipelineRunner:
        """The runner, or a ConfigError when this process was given none."""
        if self.runner is None:
            raise ConfigError("pipeline: no pipeline runner was configured for this process")
        return self.runner

    def materialize(self, start: datetime, end: datetime,
                    on_progress: Callable[[int], None] = lambda windows: None) -> WindowRuns:
        """Recompute every asset over the windows [start, end)."""
        return self.require_runner().materialize(start, end, on_progress)

    def run_file_sources(self, echo: Echo, on_run: Callable[[str, bool], None]) -> dict[str, Any]:
        """The configured file sources through the whole pipeline: bus, lander, store, every window due.

        The embedded NATS server started here is stopped before the pipeline runs begin.
        """
        runner = self.require_runner()
        landed = self.land_file_sources(echo)
        echo("3/3 materializing the partitioned assets …")
        return {**landed, "runs": asdict(runner.run_due(on_run))}

    def land_file_sources(self, echo: Echo) -> dict[str, Any]:
        """The configured file sources published to the bus and landed in the store; the embedded NATS
        server started here is stopped before it returns. KeyboardInterrupt when SIGINT or SIGTERM
        stopped the lander (landing stops cleanly on them): what follows must not run."""
        self.require_runner()
        stop = asyncio.Event()
        try:
            where = "the bus" if self.bus is not None else f"NATS ({redact(self.rt.nats_url(start=True))})"
            echo(f"1/3 publishing the file sources to {where} …")
            published = asyncio.run(publish_sources(self.rt, echo, self.bus))
            echo("2/3 landing events from the bus into the store …")
            landing_started = time.monotonic()
            landed = asyncio.run(run_lander(self.rt, until_idle=True, stop=stop, bus=self.bus))
            landing_s = time.monotonic() - landing_started
        finally:
            self.rt.stop_owned_services()
        if stop.is_set():
            raise KeyboardInterrupt
        return {
            "published": published,
            "landed": landed.landed,
            "dead_lettered_at_landing": landed.dead_lettered,
            "landing_events_per_s": round(landed.landed / landing_s) if landing_s else 0,
        }

    def run_spans(self, spans: list[tuple[datetime, datetime]], on_run: Callable[[str, bool], None]) -> dict[str, int]:
        """The windows of each span [start, end) in runs, in time order; the windows between spans hold
        no data, so detector state carries over them. A failed run stops all: every later window needs
        its detector state. `on_run(run_id or "", succeeded)` after each run."""
        succeeded, failed = 0, 0
        for start, end in spans:
            outcome = self.materialize(start, end, lambda windows: on_run("", True))
            succeeded += outcome.runs - len(outcome.failed_runs)
            failed += len(outcome.failed_runs)
            for run_id in outcome.failed_runs:
                on_run(run_id, False)
            if outcome.failed_runs:
                break
        return {"succeeded": succeeded, "failed": failed}
