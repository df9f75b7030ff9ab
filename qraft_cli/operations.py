"""Operator commands around the bus: `qraft bus status|reset`."""

import asyncio
from typing import Any

import click

from qraft_cli import emit, main, runtime
from qraft_core.redact import redact
from qraft_core.runtime import Runtime
from qraft_core.services.pipeline import reset_consumer


async def bus_status(rt: Runtime) -> dict[str, Any]:
    bus = await rt.connect_bus(start=False)
    try:
        config = await bus.stream_config()
        durable = rt.config.lander.durable_name
        try:
            lag: int | None = await bus.consumer_pending(durable)
        except Exception:  # noqa: BLE001 - no consumer yet: nothing has been landed
            lag = None
        return {
            "servers": [redact(server) for server in bus.servers], "clustered": bus.clustered, "stream": config.name,
            "replicas": config.num_replicas, "max_age_s": config.max_age, "max_bytes": config.max_bytes,
            "max_msg_bytes": config.max_msg_size, "message_limit": bus.message_limit,
            "messages": await bus.stream_messages(), "consumer": durable, "consumer_lag": lag,
        }
    finally:
        await bus.close()


@main.group("bus")
def bus_group() -> None:
    """The NATS JetStream stream and the lander's consumer."""


@bus_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Stream settings (replicas, limits, message size), stored messages and the lander's lag."""
    data = asyncio.run(bus_status(runtime(ctx)))
    emit(data, as_json, "\n".join(f"{key:>14}: {value}" for key, value in data.items()))


@bus_group.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def reset(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Delete the lander's consumer: the lander reads the stream again from its first message.

    A running lander re-creates its consumer at once (with one warning in its log) and re-lands
    the stream; a stopped one does so when it starts. Landing is idempotent by event id, so events
    already in the store are not stored twice. Use it after wiping the store, or to re-land what
    the stream still holds.
    """
    rt = runtime(ctx)
    if not yes:
        click.confirm(f"delete consumer {rt.config.lander.durable_name} of stream {rt.config.nats.stream}?",
                      abort=True)
    deleted = asyncio.run(reset_consumer(rt))
    emit({"consumer": rt.config.lander.durable_name, "deleted": deleted}, as_json,
         f"consumer {rt.config.lander.durable_name} {'deleted' if deleted else 'did not exist'}; "
         "a running lander re-creates it and re-lands the stream from its first message (a stopped one "
         "when it starts); events already stored are not stored twice")
