"""`qraft demo` (the bundled data end to end) and `qraft up` (every long-running part, supervised)."""

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml
from tqdm import tqdm

from qraft_cli import emit, main, point_dagster_at, runtime, services, validate_config
from qraft_cli.evaluate import report_table
from qraft_core.adapters.live import Backoff
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.config import ConfigError
from qraft_core.redact import redact
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
        # With --json, stdout holds the JSON alone: the steps go to stderr, as the progress bar does.
        summary = run_demo(found.pipeline, keep, lambda line: click.echo(line, err=as_json), on_run)
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
    from qraft_dagster.execute import create_instance_storage, ensure_dagster_home

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
    workspace = None if no_ui else dagster_workspace(rt.config.dagster_home)
    if workspace is not None:
        children["api"] = [*qraft, "api"]  # the REST API and the explorer at http://<api.host>:<api.port>/
        children["dagster"] = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace),
                               "-p", str(rt.config.dagster.port)]
    supervisor = ProcessSupervisor(children, env, rt.data_dir / "logs")
    heartbeat = None if workspace is None else SensorHeartbeat(supervisor, "dagster", Path(env["DAGSTER_HOME"]),
                                                               workspace)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        # Held first: a second `up` is told of the first, not of the ports the first one's children hold.
        supervisor.take_lock()
        if not no_ui:
            check_ports_free(rt)
        if workspace is not None:
            # `dagster dev`, its daemon and the heartbeat below each open the instance.
            create_instance_storage(Path(env["DAGSTER_HOME"]))
        supervisor.start()
        click.echo(f"NATS {redact(url)}; logs in {rt.data_dir / 'logs'}/")
        if not no_ui:
            click.echo(f"Dagster UI: http://127.0.0.1:{rt.config.dagster.port}")
        revival = EmbeddedRevival(rt, embedded) if embedded is not None else None
        while not stopping.wait(0.5):
            if revival is not None:
                revival.check(lambda message: click.echo(message, err=True))
            supervisor.check(lambda message: click.echo(message, err=True))
            if heartbeat is not None:
                heartbeat.check(lambda message: click.echo(message, err=True))
    finally:
        supervisor.stop()
        rt.stop_owned_services()


def check_ports_free(rt: Runtime) -> None:
    """A ConfigError naming the port and its key when the API or the Dagster UI cannot listen: their
    processes would fail at once and be restarted for ever, while `up` announced them."""
    path = rt.config_path / "qraft.yaml"
    for key, host, port in (("api.port", rt.config.api.host, rt.config.api.port),
                            ("dagster.port", "127.0.0.1", rt.config.dagster.port)):
        problem = bind_problem(host, port)
        if problem is not None:
            raise ConfigError(f"{path}: {key}: port {port} on {host} cannot be listened on ({problem}); "
                              "stop the program holding it or choose another port")


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, or None when it could (as the servers bind: reusing
    an address whose connections are closing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class EmbeddedRevival:
    """Restarts the embedded NATS server from `up`'s loop when it dies. A restart that fails (a full
    disk, its port taken by another program) is reported in one line and tried again with backoff:
    it never ends `up`, whose children wait for the server to come back."""

    def __init__(self, rt: Runtime, server: EmbeddedNats, initial_s: float = 1.0, maximum_s: float = 60.0) -> None:
        self.rt = rt
        self.server = server
        self.backoff = Backoff(initial_s, maximum_s)
        self.due = 0.0

    def check(self, report: Callable[[str], None]) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        try:
            revived = self.rt.revive_embedded_nats(self.server)
        except Exception as exc:  # noqa: BLE001 - whatever stops a restart, `up` keeps running and retries
            delay = self.backoff.next()
            self.due = now + delay
            report(f"could not restart the embedded nats-server: {redact(str(exc))}; trying again in {delay:.0f}s")
            return
        self.backoff.reset()
        if revived:
            report(revived)


class SensorHeartbeat:
    """Restarts `dagster dev` when the window sensor has stopped ticking. A dead code server worker or a
    hung daemon stops the pipeline while `dagster dev` itself stays alive, so the supervisor sees no exit;
    the daemon records the start of every tick in the instance, and its silence says Dagster is stuck,
    whatever the cause. Read every few sensor intervals; a sensor a user stopped is left alone."""

    # Ticks missed before Dagster counts as stuck: a tick's evaluation may take up to its 60 s timeout.
    MISSED_TICKS = 12
    # Time `dagster dev` has to load the code location and tick for the first time after a start.
    STARTUP_S = 180.0
    # The instance is read every this many sensor intervals (as often over the start-up time before a tick).
    READ_EVERY = 3

    def __init__(self, supervisor: ProcessSupervisor, child: str, dagster_home: Path, workspace: Path) -> None:
        self.supervisor = supervisor
        self.child = child
        self.dagster_home = dagster_home
        self.workspace = workspace
        self.instance: Any = None
        self.origins: list[Any] = []
        self.due = 0.0
        self.unreadable = False

    def last_tick(self) -> tuple[float | None, int | None] | None:
        """When the window sensor last started a tick (wall clock) and its interval, as the daemon recorded
        them (None, None before its first tick); None when a user stopped the sensor."""
        from dagster import DagsterInstance
        from dagster._core.scheduler.instigation import SensorInstigatorData

        from qraft_dagster.execute import sensor_origins

        if self.instance is None:
            self.instance = DagsterInstance.from_config(str(self.dagster_home))
            self.origins = sensor_origins(self.workspace)
        for origin in self.origins:
            state = self.instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
            if state is not None and not state.is_running:
                return None
            data = state.instigator_data if state is not None else None
            if isinstance(data, SensorInstigatorData):
                return max(data.last_tick_start_timestamp or 0.0, data.last_tick_timestamp or 0.0) or None, \
                    data.min_interval
        return None, None

    def check(self, report: Callable[[str], None]) -> None:
        now = time.monotonic()
        child = self.supervisor.children[self.child]
        if now < self.due or child.process is None or child.restart_at is not None:
            return
        self.due = now + self.STARTUP_S / self.READ_EVERY
        try:
            heard = self.last_tick()
        except Exception as exc:  # noqa: BLE001 - an unreadable instance is no reason to restart Dagster
            if not self.unreadable:
                report(f"could not read the window sensor's ticks in {self.dagster_home}: {redact(str(exc))}")
            self.unreadable = True
            return
        self.unreadable = False
        if heard is None:
            return
        ticked, interval = heard
        # Dagster is given its start-up time after each start, and so many intervals after each tick.
        deadline = time.time() - (now - child.started_at) + self.STARTUP_S
        if ticked is not None and interval:
            self.due = now + self.READ_EVERY * interval
            deadline = max(deadline, ticked + self.MISSED_TICKS * interval)
        if time.time() > deadline:
            since = time.strftime("%H:%M:%S", time.localtime(ticked)) if ticked is not None else "its start"
            self.supervisor.restart(self.child, f"has run no window sensor tick since {since}", report)
