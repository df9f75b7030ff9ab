"""`qraft evaluate`: score the stored findings against ground truth."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from qraft_cli import PathOption, emit, json_errors, main, runtime
from qraft_core.evaluate import DEFAULT_TRUTH, MAX_ALLOWANCE_S, PROFILES, evaluate_store
from qraft_core.explain.catalog import QueryError, parse_time
from qraft_core.operators.pipeline import load_preprocessing

_COLUMNS = ("truth", "findings", "precision", "recall", "delay_mean_s", "delay_p95_s", "false_alarms_per_10k_events")


def _early_text(report: dict[str, Any]) -> str:
    """The early allowance: one for every stream, or each stream's when their bar sizes differ."""
    if report["early_s"] is not None:
        return f"{report['early_s']:g}s"
    return ", ".join(f"{stream} {seconds:g}s" for stream, seconds in report["early_s_by_stream"].items())


def report_table(report: dict[str, Any]) -> str:
    lines = [
        f"window {report['window']['start']} .. {report['window']['end']}, "
        f"tolerance {report['tolerance_s']:g}s, early {_early_text(report)}, {report['events']} events",
        f"{'':10}{'type':16}" + "".join(f"{c.replace('_', ' ')[:12]:>14}" for c in _COLUMNS),
    ]
    for who in ("detectors", "baseline"):
        for kind, row in report[who].items():
            cells = "".join(f"{'-' if row[c] is None else row[c]:>14}" for c in _COLUMNS)
            lines.append(f"{who:10}{kind:16}{cells}")
    lines += ["", "window-based score (NAB rules; 100 = perfect, 0 = no findings)",
              f"{'':10}{'type':16}" + "".join(f"{p:>14}" for p in PROFILES)]
    for who, rows in report["window_score"].items():
        for kind, row in rows.items():
            lines.append(f"{who:10}{kind:16}" + "".join(f"{'-' if row[p] is None else row[p]:>14}" for p in PROFILES))
    lines += ["", "findings:"]
    for finding in report["findings"]:
        outcome = "FALSE ALARM" if finding["false_alarm"] else f"matches {finding['truth_id']} (+{finding['delay_s']:g}s)"
        lines.append(f"  {finding['time']}  {finding['type']:15} {finding['stream']:28} {outcome:24} {finding['finding_id']}")
    lines += ["", "truth items:"]
    for item in report["truth_items"]:
        outcome = "MISSED" if item["missed"] else f"found (+{item['delay_s']:g}s) by {item['finding']}"
        lines.append(f"  {item['time']}  {item['type']:15} {item['stream']:28} {item['id']:12} {outcome}")
    return "\n".join(lines)


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """The same reading of a time as `qraft patterns`, `qraft replay` and the API."""
    if value is None:
        return None
    try:
        return parse_time(value, f"--{param.name}")
    except QueryError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], ctx, param) from None


@main.command("evaluate")
@click.option("--truth", "truth_path", type=PathOption(path_type=Path), default=DEFAULT_TRUTH,
              show_default=True, help="Ground truth JSON (the demo's format; a pattern may give a labelled "
              "window {start, end} instead of a time).")
@click.option("--start", callback=_time, help="Window start (ISO 8601, naive means UTC); default: the truth "
              "file's window.")
@click.option("--end", callback=_time, help="Window end (ISO 8601, exclusive); default: the truth file's window.")
@click.option("--early-s", type=click.FloatRange(0, MAX_ALLOWANCE_S), default=None,
              help="How many seconds before a truth item's time a finding still matches it (default: the truth "
              "file's early_s, else two bars of the stream's bar size in preprocessing.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def evaluate(ctx: click.Context, truth_path: Path, start: datetime | None, end: datetime | None,
             early_s: float | None, as_json: bool) -> None:
    """Precision, recall, detection delay, false alarm rate and the window-based (NAB) score per pattern
    type, beside a periodic baseline, every finding with the truth item it matched or "false alarm", and
    every truth item with the finding that matched it or "missed"."""
    with json_errors(as_json):
        rt = runtime(ctx)
        bar_sizes = load_preprocessing(rt.config_path)
        try:
            report = evaluate_store(rt.store, truth_path, start, end, early_s, bar_sizes.bar_seconds_for_stream)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    emit(report, as_json, report_table(report))
