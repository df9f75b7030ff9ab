"""`qraft sources list|run` and `qraft ingest`: what is configured, running all sources, or one by hand."""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import polars as pl
from tqdm import tqdm

from qraft_cli import PathOption, emit, main, runtime, services
from qraft_core.adapters.base import DEAD_LETTER_KEY, AdapterStats
from qraft_core.adapters.file import file_format
from qraft_core.adapters.parsers import GenericOptions
from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.base import Publisher
from qraft_core.config import SourceConfig
from qraft_core.events import StandardEvent
from qraft_core.metrics import serve_metrics
from qraft_core.supervisor import supervise_sources

log = logging.getLogger(__name__)


@main.group("sources")
def sources_group() -> None:
    """Configured sources and their status."""


@sources_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the sources as JSON.")
@click.pass_context
def sources_list(ctx: click.Context, as_json: bool) -> None:
    """Every source in sources.yaml with its owner, status, last event, rate and error count."""
    rows = services(ctx).sources.status()
    header = (f"{'name':<20} {'type':<10} {'status':<11} {'owner':<14} {'last event':<26} "
              f"{'ev/s':>8} {'errors':>7}")
    lines = [header] + [
        f"{r['name']:<20} {r['type']:<10} {r['status']:<11} {r['owner'] or '-':<14} "
        f"{r['last_event_time'] or '-':<26} {r['events_per_s']:>8} {r['errors']:>7}"
        for r in rows
    ]
    emit(rows, as_json, "\n".join(lines))


async def run_sources(rt: Any, poll_s: float, stop: asyncio.Event | None = None) -> None:
    """Every enabled source against the configured bus and store until stopped (SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    async with rt.bus_until_signal(stop) as bus:
        await bus.ensure_stream()
        await supervise_sources(rt.config_path, rt.state_dir, bus, stop, store=rt.store, poll_s=poll_s)


@sources_group.command("run")
@click.option("--poll", "poll_s", type=float, default=1.0, show_default=True,
              help="How often sources.yaml is checked for edits, in seconds.")
@click.option("--metrics-port", type=int, default=9465, show_default=True,
              help="Serve Prometheus metrics on this port (0 = any free port).")
@click.pass_context
def sources_run(ctx: click.Context, poll_s: float, metrics_port: int) -> None:
    """Run every enabled source until stopped; edits of sources.yaml are applied while running."""
    rt = runtime(ctx)
    port = serve_metrics(metrics_port)
    if port:
        log.info("metrics on http://127.0.0.1:%d/metrics", port)
    asyncio.run(run_sources(rt, poll_s))


def count_records(path: Path, fmt: str) -> int:
    """How many records a file holds, for the progress bar."""
    if fmt == "parquet":
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(lines - (1 if fmt == "csv" else 0), 0)


def replay_source(source: SourceConfig, path: Path, speed: float) -> SourceConfig:
    """`source` read from `path` by the file adapter, keeping its name, parser and field mapping."""
    parse_options = {k: v for k, v in source.options.items() if k in GenericOptions.model_fields}
    return source.model_copy(update={
        "type": "file", "endpoint": str(path), "options": {**parse_options, "speed": speed},
        "credentials": {},
    })


class CountingPublisher:
    """Passes everything on to the bus and advances a progress bar."""

    def __init__(self, inner: Publisher, bar: tqdm[Any] | None) -> None:
        self.inner = inner
        self.bar = bar

    async def publish_events(self, source: str, events: Sequence[StandardEvent]) -> None:
        await self.inner.publish_events(source, events)
        if self.bar is not None:
            self.bar.update(len(events))

    async def publish_raw(self, source: str, data: bytes, message_id: str | None = None) -> None:
        await self.inner.publish_raw(source, data, message_id)
        if self.bar is not None and DEAD_LETTER_KEY.encode() in data[:40]:
            self.bar.update(1)


async def ingest(
    rt: Any, source: SourceConfig, from_file: Path | None, speed: float, duration_s: float | None,
    show_progress: bool = True,
) -> AdapterStats:
    """Run one source against the configured bus until it ends, `duration_s` passes or Ctrl-C."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if duration_s is not None:
        loop.call_later(duration_s, stop.set)
    bus = await rt.connect_bus()
    bar = None
    try:
        await bus.ensure_stream()
        with tempfile.TemporaryDirectory(prefix="qraft-ingest-") as scratch:
            if from_file is not None:
                # A fresh position each time: a replay by hand reads the whole file; the bus drops repeats.
                config, state_dir = replay_source(source, from_file, speed), Path(scratch)
                if show_progress:
                    total = count_records(from_file, file_format(from_file, "auto"))
                    bar = tqdm(total=total, unit="ev", desc=source.name)
            else:
                config, state_dir = source, rt.state_dir
            adapter = build_adapter(config, state_dir)
            return await adapter.run(CountingPublisher(bus, bar), stop)
    finally:
        if bar is not None:
            bar.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await bus.close()


@main.command("ingest")
@click.argument("source_name", metavar="SOURCE")
@click.option("--from", "from_file", type=PathOption(exists=True, dir_okay=False, path_type=Path),
              help="Replay this CSV/JSONL/Parquet file under SOURCE's name and parser.")
@click.option("--speed", type=float, default=0.0, show_default=True,
              help="With --from: event-time speed-up (60 = one hour per minute); 0 = as fast as possible.")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Stop a live source after this many seconds (default: run until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def ingest_command(
    ctx: click.Context, source_name: str, from_file: Path | None, speed: float, duration_s: float | None,
    as_json: bool,
) -> None:
    """Run one configured source into the bus and print what it published."""
    if speed < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--speed")
    rt = runtime(ctx)
    source = rt.sources().get(source_name)
    stats = asyncio.run(ingest(rt, source, from_file, speed, duration_s, show_progress=not as_json))
    summary = {
        "source": source.name,
        "type": "file" if from_file else source.type,
        "from": str(from_file) if from_file else source.endpoint,
        "published": stats.published,
        "dead_lettered": stats.dead_lettered,
        "errors": stats.errors,
        "last_event_time": stats.last_event_time.isoformat() if stats.last_event_time else None,
        **{k: v for k, v in stats.extra.items() if isinstance(v, (int, float, str))},
    }
    emit(summary, as_json, f"{source.name}: published {stats.published} events, "
         f"{stats.dead_lettered} dead letters, {stats.errors} errors "
         f"(last event {summary['last_event_time'] or '-'})")
