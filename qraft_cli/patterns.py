"""`qraft patterns`: list, show, annotate and export pattern events and their cards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from tqdm import tqdm

from qraft_cli import PathOption, emit, json_errors, main, services
from qraft_core.annotations import UnknownPattern
from qraft_core.display import printable, printable_lines
from qraft_core.events import PatternType, iso
from qraft_core.explain.catalog import PatternQuery, QueryError, parse_time
from qraft_core.services.patterns import PatternService

F = TypeVar("F", bound=Callable[..., Any])


def _query(
    patterns: PatternService,
    type_: str | None,
    since: str | None,
    until: str | None,
    source: str | None,
    min_confidence: float | None,
    capped: bool = True,
) -> PatternQuery:
    """The query of the shared options; `capped`: at most api.max_range_days (listings, not exports)."""
    try:
        return patterns.query(type_, parse_time(since, "--since") if since else None,
                              parse_time(until, "--until") if until else None, source, min_confidence, capped)
    except QueryError as exc:
        raise click.UsageError(str(exc)) from None


def _filters(command: F) -> F:
    """The options every listing and export shares."""
    for option in reversed(
        [
            click.option(
                "--type", "type_", type=click.Choice([t.value for t in PatternType]), help="Pattern type."
            ),
            click.option("--since", help="ISO 8601 start on window_start (inclusive)."),
            click.option(
                "--until", help="ISO 8601 end (exclusive); a listing spans at most api.max_range_days, "
                "an export any range (default: all stored patterns)."
            ),
            click.option("--source", help="Only patterns of this source (all of its streams) or of one stream "
                         "(source:key)."),
            click.option(
                "--min-confidence", type=click.FloatRange(0, 1), help="Only patterns at least this confident."
            ),
        ]
    ):
        command = option(command)
    return command


# As many as the API serves in one page (api.max_page's default); more fails in the store, not here.
MAX_LIMIT = 1000


@contextmanager
def _known_pattern(as_json: bool = False) -> Iterator[None]:
    """An unknown pattern id is a usage error naming the argument, not a traceback; with --json, the
    error as JSON on stdout (exit 2) for the script reading it."""
    with json_errors(as_json):
        try:
            yield
        except UnknownPattern as exc:
            raise click.BadParameter(str(exc), param_hint="PATTERN_ID") from None


@main.group("patterns")
def patterns_group() -> None:
    """Pattern events and their explanation cards."""


@patterns_group.command("list")
@_filters
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True,
              help="At most this many; when there are more, stderr names the --cursor of the next page.")
@click.option("--cursor", help="The cursor stderr named after the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the pattern events as a JSON list.")
@click.pass_context
def patterns_list(
    ctx: click.Context,
    type_: str | None,
    since: str | None,
    until: str | None,
    source: str | None,
    min_confidence: float | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Pattern events in time order (the newest api.max_range_days of them when no range is given)."""
    patterns = services(ctx).patterns
    query = _query(patterns, type_, since, until, source, min_confidence)
    try:
        page, next_cursor = patterns.page(query, limit, cursor)
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint="--cursor") from None
    if next_cursor:  # on stderr, so that stdout stays the list scripts read
        click.echo(f"more patterns than --limit {limit}: the next page is --cursor {next_cursor}", err=True)
    # Stream names and states come from the data: escaped, so that they cannot drive the terminal or split a row.
    lines = [
        f"{iso(p.window_start)}  {p.type.value:<14} {p.confidence:.2f}  {','.join(map(printable, p.source_streams)):<20} "
        f"{p.pattern_id}  {printable(p.details.prev_state)} → {printable(p.details.new_state)}"
        for p in page
    ]
    emit([p.model_dump(mode="json") for p in page], as_json, "\n".join(lines) or "no patterns in this range")


@patterns_group.command("show")
@click.argument("pattern_id")
@click.option(
    "--mode",
    type=click.Choice(["human", "llm"]),
    default="human",
    show_default=True,
    help="Rule-based card, or with an LLM-based explanation added.",
)
@click.option(
    "--lang", type=click.Choice(["en", "zh"]), default=None, help="Card language (default: explain.language)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@click.pass_context
def patterns_show(ctx: click.Context, pattern_id: str, mode: str, lang: str | None, as_json: bool) -> None:
    """One pattern's card, with its clean-data context and annotations."""
    with _known_pattern(as_json):
        card = services(ctx).patterns.show(pattern_id, mode, lang)  # type: ignore[arg-type]
    emit(card.model_dump(mode="json"), as_json, printable_lines(card.markdown))


@patterns_group.command("annotate")
@click.argument("pattern_id")
@click.option("--label", type=click.Choice(["confirmed", "false_alarm", "note"]), required=True,
              help="The verdict (confirmed, false_alarm) or a note that leaves the verdict as it is.")
@click.option("--note", default="", help="Free text.")
@click.option("--author", default="", help="Who is annotating (default: cli).")
@click.option("--json", "as_json", is_flag=True, help="Print the annotation as JSON.")
@click.pass_context
def patterns_annotate(
    ctx: click.Context, pattern_id: str, label: str, note: str, author: str, as_json: bool
) -> None:
    """Confirm a pattern, mark it a false alarm, or add a note (recorded in the audit log)."""
    with _known_pattern(as_json):
        try:
            annotation = services(ctx).patterns.annotate(pattern_id, label, note, author, actor="cli")  # type: ignore[arg-type]
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    emit(annotation.model_dump(mode="json"), as_json, f"{annotation.label} recorded on {pattern_id}")


@patterns_group.command("annotations")
@click.argument("pattern_id")
@click.option("--json", "as_json", is_flag=True, help="Print the annotations as JSON.")
@click.pass_context
def patterns_annotations(ctx: click.Context, pattern_id: str, as_json: bool) -> None:
    """One pattern's verdicts and notes, oldest first."""
    with _known_pattern(as_json):
        annotations = services(ctx).patterns.annotations(pattern_id)
    lines = [f"{iso(a.created_at)}  {a.label:<11} {printable(a.author)}  {printable(a.note)}".rstrip()
             for a in annotations]
    emit([a.model_dump(mode="json") for a in annotations], as_json, "\n".join(lines) or "no annotations")


@patterns_group.command("context")
@click.argument("pattern_id")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True,
              help="At most this many rows.")
@click.option("--cursor", help="next_cursor of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON (with next_cursor).")
@click.pass_context
def patterns_context(ctx: click.Context, pattern_id: str, limit: int, cursor: str | None, as_json: bool) -> None:
    """The clean events around one pattern (explain.context_minutes either side of its window)."""
    with _known_pattern(as_json):
        try:
            page = services(ctx).patterns.context(pattern_id, limit, cursor)
        except QueryError as exc:
            raise click.BadParameter(str(exc), param_hint="--cursor") from None
    lines = [f"{row['timestamp']}  {row['source']:<20} {row['type']:<10} {row['payload']}" for row in page.rows]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    emit(page.as_json(), as_json, "\n".join(lines) or f"no clean events in [{iso(page.start)}, {iso(page.end)})")


@patterns_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.pass_context
def patterns_stats(ctx: click.Context, as_json: bool) -> None:
    """Per detector: confirmed findings, false alarms, notes and precision over the verdicts."""
    stats = services(ctx).patterns.annotation_stats()
    lines = [f"{name:<32} confirmed {s['confirmed']:>4}  false alarms {s['false_alarm']:>4}  notes {s['notes']:>4}  "
             f"precision {'-' if s['precision'] is None else format(s['precision'], '.2f')}"  # none judged yet
             for name, s in stats.items()]
    emit(stats, as_json, "\n".join(lines) or "no verdicts yet")


@patterns_group.command("export")
@_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="CSV (one row per pattern) or a JSON array of pattern events.")
@click.option(
    "--out",
    type=PathOption(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
    required=True,
    help="File to write ('-': standard output).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def patterns_export(
    ctx: click.Context,
    type_: str | None,
    since: str | None,
    until: str | None,
    source: str | None,
    min_confidence: float | None,
    fmt: str,
    out: Path,
    as_json: bool,
) -> None:
    """Export pattern events as CSV or a JSON array (for offline analysis and compliance).

    Without --since/--until every stored pattern is exported, whatever the span; pages keep memory flat.
    """
    with json_errors(as_json):
        patterns = services(ctx).patterns
        query = _query(patterns, type_, since, until, source, min_confidence, capped=False)
        if out == Path("-"):
            _export_to_stdout(patterns, query, fmt, as_json)
            return
        with tqdm(total=patterns.count(query), unit="pattern", desc="export", disable=None) as progress:
            try:
                summary = patterns.export(query, fmt, out, progress.update)  # type: ignore[arg-type]
            except OSError as exc:  # a missing folder, a full disk: `out` is named (not the staged file)
                raise OSError(exc.errno, exc.strerror or str(exc), str(out)) from None
    emit(summary, as_json, f"wrote {summary['patterns']} patterns to {out}")


def _export_to_stdout(patterns: PatternService, query: PatternQuery, fmt: str, as_json: bool) -> None:
    """`--out -`: the export on stdout, and its summary on stderr where it does not mix with it."""
    written = 0

    def count(rows: int) -> None:
        nonlocal written
        written += rows

    for chunk in patterns.export_text(query, fmt, count):  # type: ignore[arg-type]
        click.echo(chunk, nl=False)
    summary = {"patterns": written, "format": fmt, "out": "-", "start": iso(query.start), "end": iso(query.end)}
    click.echo(json.dumps(summary, sort_keys=True) if as_json else f"wrote {written} patterns to stdout", err=True)
