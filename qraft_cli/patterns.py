"""`qraft patterns`: list, show, annotate and export pattern events and their cards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from tqdm import tqdm

from qraft_cli import emit, main, runtime
from qraft_core.annotations import UnknownPattern, add_annotation
from qraft_core.events import PatternEvent, PatternType, iso
from qraft_core.explain.catalog import (
    PatternQuery,
    QueryError,
    export_chunks,
    iter_patterns,
    load_pattern,
    parse_time,
    patterns_page,
    resolve_range,
)
from qraft_core.explain.materialize import explain_pattern
from qraft_core.explain.templates import load_cards_config

if TYPE_CHECKING:
    from qraft_core.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def _query(
    rt: Runtime,
    type_: str | None,
    since: str | None,
    until: str | None,
    source: str | None,
    min_confidence: float | None,
    capped: bool = True,
) -> PatternQuery:
    """The query of the shared options; `capped`: at most api.max_range_days (listings, not exports)."""
    try:
        start, end = resolve_range(
            rt.store,
            parse_time(since, "--since") if since else None,
            parse_time(until, "--until") if until else None,
            rt.config.api.max_range_days if capped else None,
        )
    except QueryError as exc:
        raise click.UsageError(str(exc)) from None
    return PatternQuery(start, end, PatternType(type_) if type_ else None, source, min_confidence)


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
            click.option("--source", help="Only patterns on this stream."),
            click.option(
                "--min-confidence", type=click.FloatRange(0, 1), help="Only patterns at least this confident."
            ),
        ]
    ):
        command = option(command)
    return command


@main.group("patterns")
def patterns_group() -> None:
    """Pattern events and their explanation cards."""


@patterns_group.command("list")
@_filters
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the pattern events as JSON.")
@click.pass_context
def patterns_list(
    ctx: click.Context,
    type_: str | None,
    since: str | None,
    until: str | None,
    source: str | None,
    min_confidence: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """Pattern events in time order (the newest day of them when no range is given)."""
    rt = runtime(ctx)
    query = _query(rt, type_, since, until, source, min_confidence)
    page, _ = patterns_page(rt.store, query, limit)
    lines = [
        f"{iso(p.window_start)}  {p.type.value:<14} {p.confidence:.2f}  {','.join(p.source_streams):<20} "
        f"{p.pattern_id}  {p.details.prev_state} → {p.details.new_state}"
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
    rt = runtime(ctx)
    pattern = _pattern(rt, pattern_id)
    cards = load_cards_config(rt.config_path)
    card = explain_pattern(rt.store, rt.config, cards, pattern, lang or rt.config.explain.language, mode)  # type: ignore[arg-type]
    emit(card.model_dump(mode="json"), as_json, card.markdown)


def _pattern(rt: Runtime, pattern_id: str) -> PatternEvent:
    pattern = load_pattern(rt.store, pattern_id)
    if pattern is None:
        raise click.BadParameter(f"no pattern with id {pattern_id!r}", param_hint="PATTERN_ID")
    return pattern


@patterns_group.command("annotate")
@click.argument("pattern_id")
@click.option("--label", type=click.Choice(["confirmed", "false_alarm", "note"]), required=True)
@click.option("--note", default="", help="Free text.")
@click.option("--author", default="", help="Who is annotating (default: cli).")
@click.option("--json", "as_json", is_flag=True, help="Print the annotation as JSON.")
@click.pass_context
def patterns_annotate(
    ctx: click.Context, pattern_id: str, label: str, note: str, author: str, as_json: bool
) -> None:
    """Confirm a pattern, mark it a false alarm, or add a note (recorded in the audit log)."""
    rt = runtime(ctx)
    try:
        annotation = add_annotation(rt.store, pattern_id, label, note, author, actor="cli")  # type: ignore[arg-type]
    except UnknownPattern as exc:
        raise click.BadParameter(str(exc), param_hint="PATTERN_ID") from None
    emit(annotation.model_dump(mode="json"), as_json, f"{annotation.label} recorded on {pattern_id}")


@patterns_group.command("export")
@_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="File to write.",
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
    rt = runtime(ctx)
    query = _query(rt, type_, since, until, source, min_confidence, capped=False)
    total = rt.store.count("pattern_events", start=query.start, end=query.end, where=query.filters()).get(
        "", 0
    )
    written = 0
    with tqdm(total=total, unit="pattern", desc="export", disable=None) as progress:

        def counted() -> Iterator[list[PatternEvent]]:
            nonlocal written
            for page in iter_patterns(rt.store, query, rt.config.api.max_page):
                written += len(page)
                progress.update(len(page))
                yield page

        staged = out.with_name(f".{out.name}.partial")
        with staged.open("w", encoding="utf-8", newline="") as handle:
            for chunk in export_chunks(counted(), fmt):
                handle.write(chunk)
        staged.replace(out)
    summary = {
        "patterns": written,
        "format": fmt,
        "out": str(out),
        "start": iso(query.start),
        "end": iso(query.end),
    }
    emit(summary, as_json, f"wrote {written} patterns to {out}")
