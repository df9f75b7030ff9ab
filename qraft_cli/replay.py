"""`qraft replay`: recompute a window range (in the background or here), and `qraft replay status`."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from qraft_cli import PathOption, emit, main, runtime, services, validate_config
from qraft_core.config import ConfigError
from qraft_core.display import printable
from qraft_core.events import iso
from qraft_core.explain.catalog import QueryError, parse_time
from qraft_core.replays import ReplayConflict
from qraft_core.services.replay import ReplayRequest, ReplayResult


def _time_option(text: str, name: str) -> datetime:
    """The same reading of a time as `qraft patterns` and the API."""
    try:
        return parse_time(text, name)
    except QueryError as exc:
        raise click.UsageError(str(exc)) from None


def _no_data_reason(summary: dict[str, Any]) -> str:
    """Why a replayed window has no clean events: nothing landed, or every event was rejected."""
    reasons = summary["dead_letters_by_reason"]
    if not reasons:
        return "  (no data in this window)"
    shown = "; ".join(f"{reason} ({count})" for reason, count in list(reasons.items())[:3])
    return f"  (all {summary['dead_letters']} events were dead-lettered: {shown})"


def replay_text(result: ReplayResult) -> str:
    summary, diff = result.summary, result.diff
    if "error" in summary:  # a failed run: what the store holds was not recomputed, so no counts
        return "\n".join([f"replay {result.record.id}: {result.status}", f"  {summary['error']}",
                          f"  {summary['partitions']} partitions, {summary['runs']} run(s); {summary['seconds']}s"])
    lines = [f"replay {result.record.id}: {result.status}",
             f"  {summary['partitions']} partitions in {summary['runs']} run(s), {summary['events']} clean events"
             + (_no_data_reason(summary) if summary["no_data"] else ""),
             f"  pattern events: {summary['pattern_events']} {summary['pattern_events_by_type']}",
             f"  {summary['seconds']}s"]
    if summary["detector_seconds"]:  # the slowest detector first: where a slow replay spends its time
        spent = sorted(summary["detector_seconds"].items(), key=lambda item: (-item[1], item[0]))
        lines.append("  detector seconds: " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in spent))
    failures = summary.get("detector_failures") or {}
    if failures:  # the run went on without them on the streams where they failed: say so, not only "succeeded"
        first = summary.get("detector_first_failure") or {}
        lines.append("  detector failures (each restarted on its stream, the run went on):")
        lines += [f"    {name}: {count}" + (f"; first: {printable(first[name])}" if name in first else "")
                  for name, count in sorted(failures.items())]
    if diff is not None:
        lines += (["  golden differences:", *("    " + line for line in diff.lines())] if diff.regression
                  else ["  golden: no differences"])
    return "\n".join(lines)


def _known_sources(ctx: click.Context, sources: tuple[str, ...]) -> None:
    """A --source that sources.yaml does not name would limit the summary to nothing: refused."""
    configured = {source.name for source in runtime(ctx).sources().sources}
    unknown = sorted(set(sources) - configured)
    if unknown:  # worded as the API's POST /replay words it
        raise click.BadParameter(f"unknown source(s) {', '.join(map(repr, unknown))} (configured: "
                                 f"{', '.join(sorted(configured)) or 'none'})", ctx, param_hint="'--source'")


@main.group("replay", invoke_without_command=True)
@click.option("--start", "start_text", help="Window start (ISO 8601, UTC), e.g. 2026-01-05T00:00:00Z.")
@click.option("--end", "end_text", help="Window end (exclusive, ISO 8601, UTC).")
@click.option("--source", "sources", multiple=True,
              help="Limit the summary and the golden comparison to these sources (repeatable). "
                   "The windows are recomputed for every source, as detector state spans them.")
@click.option("--wait", is_flag=True, help="Run in the foreground and print the summary (default: start it in the background).")
@click.option("--in-process", is_flag=True, help="Use a throw-away Dagster instance (for CI); implies --wait.")
@click.option("--compare", "golden", type=PathOption(dir_okay=False, path_type=Path),
              help="Compare the replayed pattern events with this golden file; exit 1 on a difference.")
@click.option("--write-golden", is_flag=True, help="Write the replayed pattern events to the --compare file.")
@click.option("--tolerance", default=0.05, show_default=True, help="Allowed confidence difference against the golden file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def replay(ctx: click.Context, start_text: str | None, end_text: str | None, sources: tuple[str, ...],
           wait: bool, in_process: bool, golden: Path | None, write_golden: bool, tolerance: float,
           as_json: bool) -> None:
    """Re-run clean_events → features → detections → pattern_events → explanation_cards over a window.

    Detector state is restored from the window before --start, so a replay reproduces the original
    results. `qraft replay status [ID]` shows the replays started in the background.
    """
    if ctx.invoked_subcommand is not None:
        return
    if start_text is None or end_text is None:
        raise click.UsageError("a replay needs --start and --end (or see `qraft replay status`)")
    request = ReplayRequest(_time_option(start_text, "--start"), _time_option(end_text, "--end"),
                            tuple(sorted(sources)), golden, write_golden, tolerance,
                            actor=os.environ.get("USER", "cli"))
    # A file the runs would fail on (an unknown detector, bars that do not divide the windows) is
    # named here, not as a failed replay whose reason only Dagster's event log holds.
    validate_config(ctx.obj["config_dir"])
    _known_sources(ctx, request.sources)
    found = services(ctx, runs_pipeline=wait or in_process, ephemeral=in_process)
    replays = found.replays
    replays.check(request)
    start, end = replays.window(request.start, request.end)
    try:
        if not (wait or in_process):
            launched = found.replay_launcher.launch(start, end, list(request.sources))
            log = replays.registry.directory / f"{launched['id']}.log"
            emit({**launched, "start": iso(start), "end": iso(end)}, as_json,
                 f"replay {launched['id']} started in the background (log: {log}; `qraft replay status "
                 f"{launched['id']}` tells how it went)")
            return
        windows = int((end - start) / found.runtime.config.partitions.interval)
        with tqdm(total=windows, desc="replay", unit="window", disable=as_json) as bar:
            result = replays.run(request, on_progress=bar.update)
    except ReplayConflict as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    emit(result.summary, as_json, replay_text(result))
    if result.status != "succeeded":
        sys.exit(1)


@replay.command("status")
@click.argument("replay_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def replay_status(ctx: click.Context, replay_id: str | None, as_json: bool) -> None:
    """Replays started by `qraft replay` or the API: every one, newest first, or the one named REPLAY_ID
    with its summary (and, for a crash, how it ended and the JVM crash file)."""
    try:
        records = [asdict(r) for r in services(ctx).replays.status(replay_id)]
    except ConfigError as exc:
        if not as_json:
            raise
        emit({"error": str(exc)}, as_json)  # a script reading --json reads the error too
        sys.exit(2)
    if replay_id is not None:
        emit(records[0], as_json)
        return
    emit(records, as_json, "\n".join(f"{r['id']}  {r['status']:<10} [{r['start']}, {r['end']})  "
                                     f"{r['summary'].get('error', '')}" for r in records) or "no replays")
