"""`qraft land` (the long-running bus → store consumer) and `qraft stats`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

import click

from qraft_cli import emit, main, runtime
from qraft_core.metrics import serve_metrics
from qraft_core.runtime import Runtime
from qraft_core.services.pipeline import run_lander, table_counts

log = logging.getLogger(__name__)


@main.command("land")
@click.option("--until-idle", is_flag=True, help="Exit once the bus has nothing pending (batch use, tests).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (default: lander.metrics_port; 0 = any free port).")
@click.option("--json", "as_json", is_flag=True, help="Print the landing totals as JSON when done.")
@click.pass_context
def land(ctx: click.Context, until_idle: bool, metrics_port: int | None, as_json: bool) -> None:
    """Land events from NATS JetStream into raw_events (dead letters for what is malformed)."""
    rt = runtime(ctx)
    port = serve_metrics(rt.config.lander.metrics_port if metrics_port is None else metrics_port)
    if port:
        log.info("metrics on http://127.0.0.1:%d/metrics", port)
    stats = asyncio.run(run_lander(rt, until_idle=until_idle))
    emit(asdict(stats), as_json, f"landed {stats.landed} events, dead-lettered {stats.dead_lettered} "
         f"in {stats.batches} batches ({stats.retries} store retries)")


async def _lander_lag(rt: Runtime) -> int:
    bus = await rt.connect_bus(start=False)
    try:
        return await asyncio.wait_for(bus.consumer_pending(rt.config.lander.durable_name), timeout=5)
    finally:
        await bus.close()


def lander_lag(rt: Runtime) -> int | None:
    """Messages waiting for the lander, or None when the bus or the consumer is not there."""
    try:
        return asyncio.run(_lander_lag(rt))
    except Exception as exc:  # no server running, no consumer yet: lag is unknown, not an error
        log.debug("lander lag unknown: %s", exc)
        return None


@main.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Row counts per table, events per source, latest event times, dead letters, findings."""
    rt = runtime(ctx)
    data = {**table_counts(rt), "lander_lag_messages": lander_lag(rt)}
    lines = [f"{name:>20}  {n}" for name, n in data["tables"].items()]
    lines += [f"source {s}: {n} raw events, latest {data['latest_event_time'].get(s, '-')}"
              for s, n in sorted(data["raw_events_by_source"].items())]
    lines += [f"dead letters ({stage}): {n}" for stage, n in sorted(data["dead_letters_by_stage"].items())]
    lines += [f"pattern events ({t}): {n}" for t, n in sorted(data["pattern_events_by_type"].items())]
    lag = data["lander_lag_messages"]
    lines.append(f"lander lag: {'unknown (bus not running)' if lag is None else f'{lag} messages'}")
    emit(data, as_json, "\n".join(lines))
