"""The `qraft` console script: qraft_core's commands plus those that drive Dagster.

`qraft_core` stays free of Dagster; the commands that run the partitioned
pipeline (`demo`, `replay`, `up`) live here and join the same command group.
"""

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from qraft_core.adapters.registry import build_adapter
from qraft_core.cli import emit, main, runtime
from qraft_core.cli.evaluate import report_table
from qraft_core.cli.land import run_lander, table_counts
from qraft_core.evaluate import evaluate_store
from qraft_core.runtime import Runtime, jvm_crash_env
from qraft_dagster import operations  # registers `qraft bus` and `qraft replays`

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


async def publish_sources(rt: Runtime, echo: Callable[[str], None] = click.echo) -> dict[str, dict[str, int]]:
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
            echo(f"  {source.name}: published {stats.published} events, "
                 f"{stats.dead_lettered} unparseable records as dead letters")
    finally:
        await bus.close()
    return published


def run_pipeline(rt: Runtime, total_runs: int | None = None) -> dict[str, Any]:
    """Evaluate the window sensor and execute its runs in this process until all windows are done.

    `total_runs` (when known) gives the progress bar its end.
    """
    import warnings

    from dagster import BetaWarning, PreviewWarning

    # Qraft's own use of beta Dagster options (backfill policies) is not news to the person running it.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import catch_up, open_instance

    defs = build_definitions(str(rt.config_path.resolve()))

    logging.getLogger("dagster").setLevel(logging.WARNING)
    instance = open_instance(rt.config.dagster_home, rt.config.dagster)
    runs = {"succeeded": 0, "failed": 0}
    bar = tqdm(desc="pipeline runs", unit="run", total=total_runs)

    def on_run(request: Any, result: Any) -> None:
        runs["succeeded" if result.success else "failed"] += 1
        bar.update(1)
        if not result.success:
            click.echo(f"run {request.run_key} failed; see the Dagster UI for its logs", err=True)

    catch_up(defs, instance, on_run)  # from and to the daemon's cursor: `qraft up` continues from here
    bar.close()
    from dagster import AssetKey

    windows = {name: len(instance.get_materialized_partitions(AssetKey(name)))
               for name in ("clean_events", "explanation_cards")}
    return {**runs, "windows_materialized": windows}


def run_file_sources(rt: Runtime, echo: Callable[[str], None] = click.echo,
                     total_runs: int | None = None) -> dict[str, Any]:
    """The configured file sources through the whole pipeline: bus, lander, store, Dagster runs.

    The embedded NATS server started here is stopped before the Dagster runs begin.
    """
    try:
        echo(f"1/3 publishing the file sources to NATS ({rt.nats_url(start=True)}) …")
        published = asyncio.run(publish_sources(rt, echo))
        echo("2/3 landing events from JetStream into ClickHouse …")
        landing_started = time.monotonic()
        landed = asyncio.run(run_lander(rt, until_idle=True))
        landing_s = time.monotonic() - landing_started
    finally:
        rt.stop_owned_services()
    echo("3/3 materializing the partitioned assets through Dagster …")
    return {
        "published": published,
        "landed": landed.landed,
        "dead_lettered_at_landing": landed.dead_lettered,
        "landing_events_per_s": round(landed.landed / landing_s) if landing_s else 0,
        "runs": run_pipeline(rt, total_runs),
    }


def fresh_data_dir(rt: Runtime) -> None:
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
        fresh_data_dir(rt)
        if rt.config.nats.url:
            # An external stream outlives the data directory and drops republished ids: land it afresh.
            asyncio.run(operations.reset_consumer(rt))
    ensure_demo_data()
    summary = {
        **run_file_sources(rt),
        **table_counts(rt),
        "evaluation": evaluate_store(rt.store, DEMO_DIR / "ground_truth.json"),
        "cards": top_cards(rt),
        "seconds": round(time.monotonic() - started, 1),
    }
    emit(summary, as_json, _demo_text(rt, summary))


def top_cards(rt: Runtime, count: int = 3) -> list[str]:
    """The markdown cards of the most confident finding of each type (up to `count`)."""
    from qraft_core.store.base import Filter

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
    embedded = None if rt.config.nats.url else rt.embedded_server()
    from qraft_dagster.execute import ensure_dagster_home

    env = {**jvm_crash_env(rt.crash_dir, dict(os.environ)), "QRAFT_NATS_URL": url,
           "DAGSTER_HOME": str(ensure_dagster_home(rt.config.dagster_home, rt.config.dagster))}
    qraft = [sys.executable, "-m", "qraft_dagster"]
    children: dict[str, list[str]] = {"lander": [*qraft, "land"]}
    if not no_sources:
        children["sources"] = [*qraft, "sources", "run"]
    if not no_ui:
        children["api"] = [*qraft, "api"]  # the REST API and the explorer at http://<api.host>:<api.port>/
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
            if embedded is not None and rt.revive_embedded_nats(embedded):
                click.echo(f"the embedded nats-server had died; restarted it at {embedded.url}", err=True)
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


def _no_data_reason(summary: dict[str, Any]) -> str:
    """Why a replayed window has no clean events: nothing landed, or every event was rejected."""
    reasons = summary["dead_letters_by_reason"]
    if not reasons:
        return "  (no data in this window)"
    shown = "; ".join(f"{reason} ({count})" for reason, count in list(reasons.items())[:3])
    return f"  (all {summary['dead_letters']} events were dead-lettered: {shown})"


def _config_hash(rt: Runtime) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(rt.config_path.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@main.command("replay")
@click.option("--start", "start_text", required=True, help="Window start (ISO 8601, UTC), e.g. 2026-01-05T00:00:00Z.")
@click.option("--end", "end_text", required=True, help="Window end (exclusive, ISO 8601, UTC).")
@click.option("--source", "sources", multiple=True,
              help="Limit the summary and the golden comparison to these sources (repeatable). "
                   "The windows are recomputed for every source, as detector state spans them.")
@click.option("--wait", is_flag=True, help="Run in the foreground and print the summary (default: start it in the background).")
@click.option("--in-process", is_flag=True, help="Use a throw-away Dagster instance (for CI); implies --wait.")
@click.option("--compare", "golden", type=click.Path(dir_okay=False, path_type=Path),
              help="Compare the replayed pattern events with this golden file; exit 1 on a difference.")
@click.option("--write-golden", is_flag=True, help="Write the replayed pattern events to the --compare file.")
@click.option("--tolerance", default=0.05, show_default=True, help="Allowed confidence difference against the golden file.")
@click.option("--replay-id", hidden=True, help="Adopt a replay claimed by `qraft api` or a background launch.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def replay(ctx: click.Context, start_text: str, end_text: str, sources: tuple[str, ...], wait: bool,
           in_process: bool, golden: Path | None, write_golden: bool, tolerance: float,
           replay_id: str | None, as_json: bool) -> None:
    """Re-run clean_events → features → detections → pattern_events → explanation_cards over a window.

    Detector state is restored from the window before --start, so a replay reproduces the original results.
    """
    import sys
    from datetime import datetime

    from dagster import DagsterInstance

    from qraft_core.audit import record_audit
    from qraft_core.config import ConfigError
    from qraft_core.events import utc
    from qraft_core.golden import compare_golden, golden_document, golden_record, read_golden
    from qraft_core.replays import ReplayConflict, ReplayRegistry, launch_replay

    _use_config_dir(ctx)
    rt = runtime(ctx)
    try:
        start = utc(datetime.fromisoformat(start_text.replace("Z", "+00:00")))
        end = utc(datetime.fromisoformat(end_text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ConfigError(f"replay window: not an ISO 8601 time: {exc}") from None
    if write_golden and golden is None:
        raise click.UsageError("--write-golden needs --compare FILE")
    if golden is not None and not write_golden:
        read_golden(golden)  # a broken golden file fails before any work is done
    from qraft_core.replays import replay_window
    from qraft_dagster.replay import replayed_patterns, run_replay, window_summary

    start, end = replay_window(start, end, rt.config.partitions)
    registry = ReplayRegistry(rt.data_dir / "replays")
    source_list = sorted(sources)
    try:
        if not (wait or in_process):
            record = launch_replay(registry, rt.config_path, start, end, source_list)
            emit({"id": record.id, "status": record.status, "start": record.start, "end": record.end},
                 as_json, f"replay {record.id} started in the background (log: {registry.directory}/{record.id}.log)")
            return
        record = registry.claim(start, end, source_list, replay_id)
    except ReplayConflict as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)

    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import open_instance

    defs = build_definitions(str(rt.config_path.resolve()))

    logging.getLogger("dagster").setLevel(logging.WARNING)
    began = time.monotonic()
    instance = DagsterInstance.ephemeral() if in_process else open_instance(rt.config.dagster_home, rt.config.dagster)
    windows = int((end - start) / rt.config.partitions.interval)
    # A JVM crash (CapyMOA) leaves its report where the replay record can name it.
    os.environ.update(jvm_crash_env(rt.crash_dir, {"JAVA_TOOL_OPTIONS": os.environ.get("JAVA_TOOL_OPTIONS", "")}))
    try:
        with tqdm(total=windows, desc="replay", unit="window", disable=as_json) as bar:
            outcome = run_replay(defs, instance, rt, start, end, bar.update)
    except BaseException as exc:  # the record must not stay "running" (Ctrl-C included)
        registry.finish(record, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    summary = {"id": record.id, "start": record.start, "end": record.end, "sources": source_list, **outcome,
               **window_summary(rt, start, end, source_list), "seconds": round(time.monotonic() - began, 2),
               "config_hash": _config_hash(rt)}
    status = "failed" if outcome["failed_runs"] else "succeeded"
    diff = None
    if golden is not None and status == "succeeded":
        replayed = replayed_patterns(rt, start, end, source_list)
        if write_golden:
            from qraft_core.golden import write_golden as write

            write(golden, golden_document(replayed, start, end))
            summary["golden_written"] = str(golden)
        else:
            diff = compare_golden(read_golden(golden)["patterns"], [golden_record(p) for p in replayed], tolerance)
            summary["golden"] = {"file": str(golden), "regression": diff.regression, **diff.as_dict()}
            status = "regression" if diff.regression else status
    summary["status"] = status
    registry.finish(record, status, summary)
    from qraft_core.tracking import Tracker, library_versions

    Tracker.from_config(rt.config).log_run(
        f"replay {record.start}..{record.end}",
        params={"start": record.start, "end": record.end, "sources": ",".join(source_list) or "all",
                "config_hash": summary["config_hash"], "actor": os.environ.get("USER", "cli"), **library_versions()},
        metrics={"events": summary["events"], "pattern_events": summary["pattern_events"],
                 "seconds": summary["seconds"], "partitions": summary["partitions"],
                 **{f"pattern_events.{k}": v for k, v in summary["pattern_events_by_type"].items()}},
        tags={"qraft.kind": "replay", "qraft.status": status, "qraft.replay_id": record.id},
    )
    record_audit(rt.store, os.environ.get("USER", "cli"), "replay", f"[{record.start}, {record.end})",
                 after={k: summary[k] for k in ("status", "events", "pattern_events_by_type")},
                 detail={"config_hash": summary["config_hash"], "sources": source_list, "id": record.id})
    human = [f"replay {record.id}: {status}",
             f"  {summary['partitions']} partitions in {summary['runs']} run(s), {summary['events']} clean events"
             + (_no_data_reason(summary) if summary["no_data"] else ""),
             f"  pattern events: {summary['pattern_events']} {summary['pattern_events_by_type']}",
             f"  {summary['seconds']}s"]
    if diff is not None:
        human += ["  golden: no differences"] if not diff.regression else ["  golden differences:", *("    " + line for line in diff.lines())]
    emit(summary, as_json, "\n".join(human))
    if status != "succeeded":
        sys.exit(1)


from qraft_dagster import analyze  # noqa: E402,F401 - registers `qraft analyze` (it uses the functions above)
