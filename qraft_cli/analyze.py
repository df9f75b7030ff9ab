"""`qraft analyze FILE...`: a user's own files through the real pipeline, with inferred settings.

The settings come from `qraft_core.analyze` (written as a configuration folder
next to the data); this module runs them the way `qraft demo` runs the demo:
file sources → embedded NATS → lander → chDB → Dagster runs → cards.
"""

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from qraft_cli import PathOption, emit, main, pipeline_services
from qraft_cli.pipeline import run_progress
from qraft_core.analyze import AnalyzeError, describe_plan, finding_rows, infer_config
from qraft_core.config import CONFIG_DIR_ENV, ENV_PREFIX
from qraft_core.display import printable, printable_lines
from qraft_core.patterns.materialize import load_pattern_events
from qraft_core.process_lock import LockHeld, hold_lock
from qraft_core.services.pipeline import fresh_data_dir, top_cards

# Where the configuration and the data go, next to the first file, unless told otherwise.
OUTPUT_FOLDER = "qraft_analyze"
# The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
# The project's own configuration: its cards serve when --config-dir (by default ./config) has none,
# so analyze runs from any folder.
PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "config"


@main.command("analyze")
# A folder among the files is left out with the reason, as any file that cannot be analysed (not all of them).
@click.argument("files", nargs=-1, required=True, type=PathOption(path_type=Path))
@click.option("--time-field", help="The column holding event times (default: detected).")
@click.option("--data-dir", type=PathOption(file_okay=False, path_type=Path),
              help=f"Where the store, bus and Dagster data go (default: {OUTPUT_FOLDER}/data next to the first file).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON list.")
@click.pass_context
def analyze(ctx: click.Context, files: tuple[Path, ...], time_field: str | None, data_dir: Path | None,
            as_json: bool) -> None:
    """Find patterns in your own CSV, JSONL or Parquet files with settings inferred from them.

    Each file becomes its own stream, named after the file. The inferred configuration is written to
    qraft_analyze/config next to the first file (re-running replaces it): edit it and run
    `qraft --config-dir ... up` on it.
    """
    def echo(text: str) -> None:
        # Lines name files, streams and fields of the user's data: their control characters are escaped.
        click.echo(printable_lines(text), err=as_json)

    try:
        with interrupts() as check:
            _analyze(ctx, files, time_field, data_dir, as_json, echo, check)
    except KeyboardInterrupt:
        # Every process it started is stopped by now: the embedded NATS server when landing ends.
        click.echo("\ninterrupted: qraft analyze stopped; nothing was left running. Run it again to start over.",
                   err=True)
        sys.exit(INTERRUPTED)


@contextmanager
def interrupts() -> Iterator[Callable[[], None]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt; the check it yields raises one for a signal that arrived
    since it was last called, also one a Dagster run took for itself (the run fails, the next would start).

    Python writes each signal's number to the wakeup file descriptor whichever handler takes the signal.
    """
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    before = signal.set_wakeup_fd(write)

    def check() -> None:
        # asyncio's signal handling (the lander's) resets the handlers and the wakeup fd when done.
        for sig in previous:
            signal.signal(sig, interrupt)
        signal.set_wakeup_fd(write)
        try:
            received = os.read(read, 64)
        except BlockingIOError:
            received = b""
        if {signal.SIGINT, signal.SIGTERM} & set(received):
            raise KeyboardInterrupt

    try:
        yield check
    finally:
        signal.set_wakeup_fd(before)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read)
        os.close(write)


def _analyze(ctx: click.Context, files: tuple[Path, ...], time_field: str | None, data_dir: Path | None,
             as_json: bool, echo: Callable[[str], None], check: Callable[[], None]) -> None:

    # A trial is self-contained: QRAFT_* overrides (a data directory, a store or bus URL) must not
    # point it at, and wipe, another deployment's data.
    ignored = sorted(name for name in os.environ if name.startswith(ENV_PREFIX) and name != CONFIG_DIR_ENV)
    for name in ignored:
        del os.environ[name]
    if ignored:
        echo(f"ignoring {', '.join(ignored)}: analyze uses only the configuration it writes")

    output = files[0].resolve().parent / OUTPUT_FOLDER
    try:
        lock = hold_lock(output / "analyze.lock")
    except LockHeld as held:
        # Both would write the configuration next to the files and run from it: each would run the other's.
        raise AnalyzeError(f"{output}: another `qraft analyze` of files in this folder is running (pid "
                           f"{held.holder}); wait for it to end") from None
    try:
        _analyze_locked(ctx, files, time_field, data_dir, as_json, echo, check, output)
    finally:
        os.close(lock)


def _analyze_locked(ctx: click.Context, files: tuple[Path, ...], time_field: str | None, data_dir: Path | None,
                    as_json: bool, echo: Callable[[str], None], check: Callable[[], None], output: Path) -> None:
    config_dir = output / "config"
    candidates = [Path(ctx.obj["config_dir"]) / "cards.yaml", PROJECT_CONFIG / "cards.yaml"]
    cards_file = next((path for path in candidates if path.is_file()), None)
    if cards_file is None:
        raise AnalyzeError(f"no cards.yaml in {' or '.join(str(p.parent) for p in candidates)}: "
                           "name a configuration folder that has one with --config-dir")
    plan = infer_config(list(files), time_field, config_dir, data_dir or output / "data", cards_file)
    echo(f"inferred settings, written to {config_dir}/:")
    for line in describe_plan(plan):
        echo(printable(line))
    ctx.obj["config_dir"] = str(config_dir)  # the configuration this command runs from here on (errors name its parts)
    found = pipeline_services(config_dir, runs_pipeline=True)
    rt = found.runtime
    fresh_data_dir(rt)
    summary = found.pipeline.land_file_sources(echo)
    check()
    echo(f"3/3 materializing the partitioned assets of {len(plan.spans)} time span(s) …")
    with run_progress(plan.runs) as progress:
        def on_run(run_key: str, succeeded: bool) -> None:
            check()  # an interrupted Dagster run fails: stop here rather than start the next one
            progress(run_key, succeeded)

        runs = found.pipeline.run_spans(plan.spans, on_run)
    patterns = load_pattern_events(rt.store)
    findings = finding_rows(patterns)
    if as_json:
        emit(findings, True)
        _exit_if_failed(runs)
        return
    lines = ["", f"{len(findings)} finding(s) in {summary['landed']} events "
             f"({runs['succeeded']} runs, {runs['failed']} failed):"]
    lines += [f"  {f['timestamp']}  {f['type']:<15} {', '.join(map(printable, f['source_streams']))}  "
              f"confidence {f['confidence']:.2f}  {f['pattern_id']}" for f in findings]
    cards = top_cards(rt)
    if cards:
        lines += ["", "The most confident finding of each type, as its card:", "", *cards]
    lines += ["", f"Configuration: {config_dir} (run it with `qraft --config-dir {config_dir} up`)"]
    emit(None, False, printable_lines("\n".join(lines)))
    _exit_if_failed(runs)


def _exit_if_failed(runs: dict[str, int]) -> None:
    """Exit 1 when a pipeline run failed: the findings are then those of the windows before it only, and a
    script must not take an empty list for "nothing found"."""
    if runs["failed"]:
        click.echo(f"error: {runs['failed']} pipeline run(s) failed, the later windows were not analysed; "
                   "see the Dagster UI for the run's logs", err=True)
        sys.exit(1)
