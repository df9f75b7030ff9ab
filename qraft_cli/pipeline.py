"""`qraft demo` (the bundled data end to end) and `qraft up` (every long-running part, supervised)."""

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml
from tqdm import tqdm

from qraft_cli import emit, main, point_dagster_at, runtime, services, validate_config
from qraft_cli.evaluate import report_table
from qraft_core.runtime import Runtime, jvm_crash_env
from qraft_core.services.demo import run_demo
from qraft_core.supervisor import ProcessSupervisor

RunCallback = Callable[[str, bool], None]


@main.command("demo")
@click.option("--keep", is_flag=True, help="Keep the existing data directory instead of starting empty.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def demo(ctx: click.Context, keep: bool, as_json: bool) -> None:
    """Run the whole pipeline on the bundled demo data: files → NATS → lander → ClickHouse → Dagster."""
    # The demo's stream ends; windows close as soon as the lander has nothing more.
    os.environ.setdefault("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    found = services(ctx, runs_pipeline=True)
    with run_progress() as on_run:
        summary = run_demo(found.pipeline, keep, click.echo, on_run)
    emit(summary, as_json, _demo_text(found.runtime, summary))


@contextmanager
def run_progress(total_runs: int | None = None) -> Iterator[RunCallback]:
    """A progress bar of pipeline runs (its end when known); a failed run is reported as it fails."""
    with tqdm(desc="pipeline runs", unit="run", total=total_runs) as bar:
        def on_run(run_key: str, succeeded: bool) -> None:
            bar.update(1)
            if not succeeded:
                click.echo(f"run {run_key} failed; see the Dagster UI for its logs", err=True)

        yield on_run


def _demo_text(rt: Runtime, summary: dict[str, Any]) -> str:
    tables = summary["tables"]
    lines = [
        "",
        f"Demo done in {summary['seconds']}s: {summary['landed']} events landed, "
        f"{tables.get('clean_events', 0)} clean, {tables.get('dead_letters', 0)} dead letters, "
        f"{summary['runs']['succeeded']} Dagster runs ({summary['runs']['failed']} failed), "
        f"{summary['runs']['windows_materialized']['explanation_cards']} one-minute windows materialized; "
        f"landing ran at {summary['landing_events_per_s']} events/s.",
        "",
        "Where to look:",
        "  qraft stats                 row counts, sources, dead letters",
        "  qraft evaluate              precision, recall and delay against data/demo/ground_truth.json",
        "  qraft patterns list         the findings; `qraft patterns show ID` for one card",
        "  qraft api                   the REST/Explain API (OpenAPI page at /docs)",
        f"  make ui                     Dagster UI at http://127.0.0.1:{rt.config.dagster.port} (lineage, runs, backfills)",
    ]
    lines += ["", "How the findings score against the planted truth (qraft evaluate):", "",
              report_table(summary["evaluation"])]
    cards = summary.get("cards", [])
    if cards:
        lines += ["", f"Some of the {tables.get('pattern_events', 0)} findings, as their cards:", ""]
        lines += [f"{card}\n" for card in cards]
    return "\n".join(lines)


def dagster_workspace(dagster_home: Path) -> Path:
    """The workspace file `qraft up` serves: the current folder's, else (`qraft up` on the configuration
    `qraft analyze` wrote next to the data) the project's code location written into the Dagster
    home, so `dagster dev` starts wherever `up` is run from."""
    from qraft_dagster.execute import CODE_LOCATION, workspace_file

    found = workspace_file(dagster_home)
    if not found.is_file():
        dagster_home.mkdir(parents=True, exist_ok=True)
        found.write_text(yaml.safe_dump(CODE_LOCATION, sort_keys=False))
    return found


@main.command("up")
@click.option("--no-ui", is_flag=True, help="Do not start the Dagster webserver and daemon.")
@click.option("--no-sources", is_flag=True, help="Do not run the configured sources.")
@click.pass_context
def up(ctx: click.Context, no_ui: bool, no_sources: bool) -> None:
    """Run everything: embedded NATS, the lander, the enabled sources (hot-reloaded) and `dagster dev`.

    Children that exit are restarted with backoff; Ctrl-C or SIGTERM stops them all.
    """
    from qraft_dagster.execute import ensure_dagster_home

    # A bad file stops `up` here with the file and key named, not its children one restart after another.
    validate_config(ctx.obj["config_dir"])
    rt = runtime(ctx)
    point_dagster_at(rt.config_path)
    url = rt.nats_url(start=True)
    embedded = None if rt.config.nats.url else rt.embedded_server()
    env = {**jvm_crash_env(rt.crash_dir, dict(os.environ)), "QRAFT_NATS_URL": url,
           "DAGSTER_HOME": str(ensure_dagster_home(rt.config.dagster_home, rt.config.dagster))}
    qraft = [sys.executable, "-m", "qraft_cli"]
    children: dict[str, list[str]] = {"lander": [*qraft, "land"]}
    if not no_sources:
        children["sources"] = [*qraft, "sources", "run"]
    if not no_ui:
        children["api"] = [*qraft, "api"]  # the REST API and the explorer at http://<api.host>:<api.port>/
        children["dagster"] = [sys.executable, "-m", "dagster", "dev", "-w", str(dagster_workspace(rt.config.dagster_home)),
                               "-p", str(rt.config.dagster.port)]
    supervisor = ProcessSupervisor(children, env, rt.data_dir / "logs")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    supervisor.start()
    click.echo(f"NATS {url}; logs in {rt.data_dir / 'logs'}/")
    if not no_ui:
        click.echo(f"Dagster UI: http://127.0.0.1:{rt.config.dagster.port}")
    try:
        while not stopping.wait(0.5):
            if embedded is not None and (revived := rt.revive_embedded_nats(embedded)):
                click.echo(revived, err=True)
            supervisor.check(lambda message: click.echo(message, err=True))
    finally:
        supervisor.stop()
        rt.stop_owned_services()
