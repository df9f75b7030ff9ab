"""The `qraft` console script: qraft_core's commands plus those that drive Dagster.

`qraft_core` stays free of Dagster; the commands that run the partitioned
pipeline (`demo`, `replay`, `up`) live here and join the same command group.
"""

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from qraft_core.adapters.registry import build_adapter
from qraft_core.cli import emit, main, runtime
from qraft_core.cli.land import run_lander, table_counts
from qraft_core.runtime import Runtime

log = logging.getLogger(__name__)

DEMO_DIR = Path("data/demo")


def _use_config_dir(ctx: click.Context) -> None:
    # The Dagster definitions read the configuration when first imported.
    os.environ["QRAFT_CONFIG_DIR"] = str(Path(ctx.obj["config_dir"]).resolve())


def ensure_demo_data(directory: Path = DEMO_DIR) -> None:
    """Generate the seeded demo files unless they are already there."""
    from qraft_core.demo.generate import generate_demo

    if not (directory / "trades.jsonl").exists() or not (directory / "ground_truth.json").exists():
        click.echo(f"generating demo data in {directory}/ …")
        generate_demo(directory)


async def publish_sources(rt: Runtime) -> dict[str, dict[str, int]]:
    """Replay every enabled file source into the bus, as fast as possible."""
    bus = await rt.connect_bus()
    published: dict[str, dict[str, int]] = {}
    try:
        for source in rt.sources().sources:
            if not source.enabled or source.type != "file":
                continue
            adapter = build_adapter(source, rt.state_dir)
            stats = await adapter.run(bus, asyncio.Event())
            published[source.name] = {"published": stats.published, "dead_lettered": stats.dead_lettered}
            click.echo(f"  {source.name}: published {stats.published} events, "
                       f"{stats.dead_lettered} unparseable records as dead letters")
    finally:
        await bus.close()
    return published


def run_pipeline(rt: Runtime) -> dict[str, Any]:
    """Evaluate the window sensor and execute its runs in this process until all windows are done."""
    from qraft_dagster.definitions import defs
    from qraft_dagster.execute import drain_sensor, open_instance

    logging.getLogger("dagster").setLevel(logging.WARNING)
    instance = open_instance(rt.config.dagster_home)
    runs = {"succeeded": 0, "failed": 0}
    bar = tqdm(desc="pipeline runs", unit="run")

    def on_run(request: Any, result: Any) -> None:
        runs["succeeded" if result.success else "failed"] += 1
        bar.update(1)
        if not result.success:
            click.echo(f"run {request.run_key} failed; see the Dagster UI for its logs", err=True)

    drain_sensor(defs, instance, None, on_run)
    bar.close()
    return runs


def _fresh_data_dir(rt: Runtime) -> None:
    for name in ("clickhouse", "clickhouse.lock", "nats", "state", "dagster"):
        target = rt.data_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@main.command("demo")
@click.option("--keep", is_flag=True, help="Keep the existing data directory instead of starting empty.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def demo(ctx: click.Context, keep: bool, as_json: bool) -> None:
    """Run the whole pipeline on the bundled demo data: files → NATS → lander → ClickHouse → Dagster."""
    _use_config_dir(ctx)
    # The demo's stream ends; windows close as soon as the lander has nothing more.
    os.environ.setdefault("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    started = time.monotonic()
    rt = runtime(ctx)
    if not keep:
        _fresh_data_dir(rt)
    ensure_demo_data()
    try:
        click.echo(f"1/3 publishing the demo sources to NATS ({rt.nats_url(start=True)}) …")
        published = asyncio.run(publish_sources(rt))
        click.echo("2/3 landing events from JetStream into ClickHouse …")
        landed = asyncio.run(run_lander(rt, until_idle=True))
    finally:
        rt.stop_owned_services()
    click.echo("3/3 materializing the partitioned assets through Dagster …")
    runs = run_pipeline(rt)
    summary = {
        "published": published,
        "landed": landed.landed,
        "dead_lettered_at_landing": landed.dead_lettered,
        "runs": runs,
        **table_counts(rt),
        "seconds": round(time.monotonic() - started, 1),
    }
    emit(summary, as_json, _demo_text(rt, summary))


def _demo_text(rt: Runtime, summary: dict[str, Any]) -> str:
    tables = summary["tables"]
    lines = [
        "",
        f"Demo done in {summary['seconds']}s: {summary['landed']} events landed, "
        f"{tables.get('clean_events', 0)} clean, {tables.get('dead_letters', 0)} dead letters, "
        f"{summary['runs']['succeeded']} Dagster runs ({summary['runs']['failed']} failed).",
        "",
        "Where to look:",
        "  qraft stats                 row counts, sources, dead letters",
        f"  make ui                     Dagster UI at http://127.0.0.1:{rt.config.dagster.port} (lineage, runs, backfills)",
    ]
    return "\n".join(lines)


def _spawn(command: list[str], env: dict[str, str], log_file: Path) -> Any:
    import subprocess

    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_file, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


@main.command("up")
@click.option("--no-ui", is_flag=True, help="Do not start the Dagster webserver and daemon.")
@click.option("--no-sources", is_flag=True, help="Do not run the configured sources.")
@click.pass_context
def up(ctx: click.Context, no_ui: bool, no_sources: bool) -> None:
    """Run everything: embedded NATS, the lander, the enabled sources (hot-reloaded) and `dagster dev`.

    Children that exit are restarted with backoff; Ctrl-C or SIGTERM stops them all.
    """
    import signal
    import sys

    _use_config_dir(ctx)
    rt = runtime(ctx)
    url = rt.nats_url(start=True)
    env = {**os.environ, "QRAFT_NATS_URL": url, "DAGSTER_HOME": str(rt.config.dagster_home)}
    rt.config.dagster_home.mkdir(parents=True, exist_ok=True)
    qraft = [sys.executable, "-m", "qraft_dagster"]
    children: dict[str, list[str]] = {"lander": [*qraft, "land"]}
    if not no_sources:
        children["sources"] = [*qraft, "sources", "run"]
    if not no_ui:
        children["dagster"] = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml",
                               "-p", str(rt.config.dagster.port)]
    logs = rt.data_dir / "logs"
    running = {name: _spawn(cmd, env, logs / f"{name}.log") for name, cmd in children.items()}
    click.echo(f"NATS {url}; logs in {logs}/")
    if not no_ui:
        click.echo(f"Dagster UI: http://127.0.0.1:{rt.config.dagster.port}")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = dict.fromkeys(children, 1.0)
    try:
        while not stopping:
            for name, process in running.items():
                if process.poll() is not None and not stopping:
                    click.echo(f"{name} exited with {process.returncode}; restarting in {backoff[name]:.0f}s", err=True)
                    time.sleep(backoff[name])
                    backoff[name] = min(backoff[name] * 2, 60)
                    running[name] = _spawn(children[name], env, logs / f"{name}.log")
            time.sleep(0.5)
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in running.values():
            try:
                process.wait(timeout=20)
            except Exception:
                os.killpg(process.pid, signal.SIGKILL)
        rt.stop_owned_services()
