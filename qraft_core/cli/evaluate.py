"""`qraft evaluate`: score the stored findings against ground truth."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from qraft_core.cli import emit, main, runtime
from qraft_core.evaluate import DEFAULT_TRUTH, evaluate_store

_COLUMNS = ("truth", "findings", "precision", "recall", "delay_mean_s", "delay_p95_s", "false_alarms_per_10k_events")


def report_table(report: dict[str, Any]) -> str:
    lines = [
        f"window {report['window']['start']} .. {report['window']['end']}, "
        f"tolerance {report['tolerance_s']:g}s, {report['events']} events",
        f"{'':10}{'type':16}" + "".join(f"{c.replace('_', ' ')[:12]:>14}" for c in _COLUMNS),
    ]
    for who in ("detectors", "baseline"):
        for kind, row in report[who].items():
            cells = "".join(f"{'-' if row[c] is None else row[c]:>14}" for c in _COLUMNS)
            lines.append(f"{who:10}{kind:16}{cells}")
    return "\n".join(lines)


@main.command("evaluate")
@click.option("--truth", "truth_path", type=click.Path(path_type=Path), default=DEFAULT_TRUTH,
              show_default=True, help="Ground truth JSON (the demo's format).")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              default=None, help="Window start (UTC); default: the truth file's window.")
@click.option("--end", type=click.DateTime(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              default=None, help="Window end (UTC, exclusive); default: the truth file's window.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def evaluate(ctx: click.Context, truth_path: Path, start: datetime | None, end: datetime | None,
             as_json: bool) -> None:
    """Precision, recall, detection delay and false alarm rate per pattern type, beside a periodic baseline."""
    try:
        report = evaluate_store(runtime(ctx).store, truth_path, start, end)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    emit(report, as_json, report_table(report))
