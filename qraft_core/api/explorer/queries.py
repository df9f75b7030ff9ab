"""The explorer's reads: what its pages show, from the store interface only.

Feature columns are whatever the `features` table holds for a stream (market
bars today, generic per-field statistics for other sources); nothing here
names a column.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from qraft_core.annotations import list_annotations, verdicts
from qraft_core.events import PatternEvent, iso, utc
from qraft_core.explain.catalog import (
    PatternQuery,
    encode_cursor,
    iter_patterns,
    parse_time,
    patterns_page,
)
from qraft_core.explain.context import context_window, pattern_sources
from qraft_core.operators.stream_names import MAX_STREAM_NAME_CHARS, stream_name
from qraft_core.store.base import EventStore, Filter
from qraft_core.streams import StreamId
from qraft_core.timeutil import parse_iso

# The steps of the pipeline in flow order, with the table each one fills.
PIPELINE_STEPS = [
    ("raw", "raw_events"),
    ("clean", "clean_events"),
    ("features", "features"),
    ("detections", "detections"),
    ("findings", "pattern_events"),
    ("cards", "pattern_cards"),
]
VERDICT_FILTERS = ("any", "unreviewed", "confirmed", "false_alarm")
_WORD = re.compile(r"[\w']+")


def stream_symbol(stream: str) -> tuple[str, str]:
    """(source, symbol) of a stream name; `binance_spot:BTCUSDT` is symbol BTCUSDT of binance_spot.

    >>> stream_symbol("binance_spot:BTCUSDT"), stream_symbol("news")
    (('binance_spot', 'BTCUSDT'), ('news', ''))
    """
    stream_id = StreamId.parse(stream)
    return stream_id.source, stream_id.key


# -- findings inbox ---------------------------------------------------------
def inbox_page(
    store: EventStore, query: PatternQuery, verdict: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Findings with their verdicts, a keyset page at a time, keeping only those with `verdict`.

    Catalogue pages are read until one finding more than `limit` passes the filter, so a page
    is never short while more remain and there is a next cursor only when a next page has rows.
    """
    found: list[dict[str, Any]] = []
    scan = cursor
    while len(found) <= limit:
        page, after = patterns_page(store, query, limit + 1, scan)
        labels = verdicts(list_annotations(store, [p.pattern_id for p in page])) if page else {}
        for pattern in page:
            label = labels.get(pattern.pattern_id, "unreviewed")
            if verdict in ("any", label):
                found.append({**pattern.model_dump(mode="json"), "verdict": label})
        if after is None:
            break
        scan = after
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], encode_cursor(parse_time(last["window_start"], "window_start"), last["pattern_id"])


def newest_finding(store: EventStore) -> dict[str, Any]:
    """How many findings there are and the newest one's window, for live updates."""
    newest = store.max_time("pattern_events", "type")
    return {
        "count": store.count("pattern_events").get("", 0),
        "newest_window": iso(max(newest.values())) if newest else None,
    }


# -- streams and series -----------------------------------------------------
def stream_catalog(store: EventStore) -> list[dict[str, Any]]:
    """Every stream with features: its columns (those of its newest bar), bars, extent, findings.

    Two grouped queries whatever the number of streams: asking about each stream in turn held
    the store for minutes with thousands of them, locking every other process out.
    """
    summaries = store.summarize("features", "stream", latest=["names"])
    findings = store.count("pattern_events", group_by="source_streams")
    return [
        {
            # Longer names than the pipeline makes come only from rows written by hand: cut, they
            # still tell the streams apart without bloating the page.
            "stream": _short(stream, MAX_STREAM_NAME_CHARS),
            "columns": [_short(name, MAX_STREAM_NAME_CHARS) for name in summary.latest["names"]],
            "bars": summary.rows,
            "first_bar": iso(summary.first),
            "last_bar": iso(summary.last),
            "findings": findings.get(stream, 0),
        }
        for stream, summary in sorted(summaries.items())
    ]


def feature_series(
    store: EventStore, stream: str, start: datetime, end: datetime, max_bars: int
) -> dict[str, Any]:
    """The stream's feature bars in [start, end): times, event counts, one array per column."""
    frame = store.select(
        "features",
        start=start,
        end=end,
        where=[Filter("stream", "=", stream)],
        columns=["bar_time", "event_count", "names", "values", "items"],
        order_by=("bar_time",),
        limit=max_bars + 1,
    )
    truncated = frame.height > max_bars
    frame = frame.head(max_bars)
    names: list[str] = []
    for row_names in frame["names"]:
        names += [n for n in row_names if n not in names]
    columns: dict[str, list[float | None]] = {n: [] for n in names}
    for row_names, row_values in zip(frame["names"], frame["values"], strict=True):
        values = dict(zip(row_names, row_values, strict=False))
        for name in names:
            columns[name].append(values.get(name))
    return {
        "stream": stream,
        "times": [iso(t) for t in frame["bar_time"]],
        "event_count": frame["event_count"].to_list(),
        "columns": columns,
        "items": [list(i) for i in frame["items"]],
        "truncated": truncated,
    }


def _numbers(payload: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a payload, numbers written as strings included (Binance sends "42000.5")."""
    numbers = {}
    for key, value in payload.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            numbers[key] = float(value)
        elif isinstance(value, str):
            try:
                numbers[key] = float(value)
            except ValueError:
                continue
    return numbers


def raw_values(
    store: EventStore, stream: str, start: datetime, end: datetime, max_rows: int
) -> dict[str, Any]:
    """The numeric payload fields of the stream's clean events in [start, end), as columns.

    A stream `source:SYMBOL` keeps the events of its source whose payload names the symbol.
    Fields that carry no measurement are left out: constants, counters (ids) and the events'
    own times.
    """
    source, symbol = stream_symbol(stream)
    frame = store.select(
        "clean_events",
        start=start,
        end=end,
        where=[Filter("source", "=", source)],
        columns=["timestamp", "payload"],
        order_by=("timestamp", "event_id"),
        limit=max_rows + 1,
    )
    truncated = frame.height > max_rows
    stamps: list[datetime] = []
    rows: list[dict[str, float]] = []
    for ts, text in zip(frame["timestamp"].head(max_rows), frame["payload"].head(max_rows), strict=True):
        payload = json.loads(text)
        if symbol and symbol not in payload.values() and not _renamed_key_of(payload, source, stream):
            continue
        stamps.append(ts)
        rows.append(_numbers(payload))
    fields = sorted({k for row in rows for k in row})
    columns = {f: [row.get(f) for row in rows] for f in fields}
    middle = stamps[len(stamps) // 2].timestamp() if stamps else 0.0
    measured = {
        f: v
        for f, v in columns.items()
        if len({x for x in v if x is not None}) > 1 and not _is_counter(v, len(stamps)) and not _is_epoch(v, middle)
    }
    return {"times": [iso(t) for t in stamps], "columns": measured, "truncated": truncated}


def _renamed_key_of(payload: dict[str, Any], source: str, stream: str) -> bool:
    """Whether a payload value is the key of `stream` as the stream-name rule changed it (a key with
    control characters or too long: `qraft_core.operators.stream_names`)."""
    return "~" in stream and any(
        isinstance(value, str) and stream_name(f"{source}:{value}") == stream for value in payload.values())


def _is_counter(values: list[float | None], n: int) -> bool:
    """A whole-number field that never falls over time: an id or a sequence number, not a measurement.

    >>> _is_counter([7.0, 7.0, 9.0], 3), _is_counter([3.0, 2.0, 4.0], 3)
    (True, False)
    """
    present = [v for v in values if v is not None]
    return (
        len(present) == n > 2
        and all(float(v).is_integer() for v in present)
        and all(b >= a for a, b in zip(present, present[1:], strict=False))
    )


def _is_epoch(values: list[float | None], event_time_s: float) -> bool:
    """A field holding the events' own time as seconds, ms, µs or ns since 1970 (within a day).

    >>> _is_epoch([1767571200026.0, 1767571200015.0], 1767571200.0), _is_epoch([95000.5], 1767571200.0)
    (True, False)
    """
    present = sorted(v for v in values if v is not None)
    if not present:
        return False
    median = present[len(present) // 2]
    return any(abs(median / scale - event_time_s) < 86_400 for scale in (1, 1e3, 1e6, 1e9))


def signals(store: EventStore, streams: list[str], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Detector alarms on these streams in the windows of [start, end)."""
    frame = store.select(
        "detections",
        start=start,
        end=end,
        where=[Filter("stream", "in", streams or [""])],
        columns=["time", "detector", "engine", "stream", "type", "score", "confidence", "body"],
        order_by=("time", "detector"),
    )
    return [
        {
            **{k: v for k, v in row.items() if k != "body"},
            "time": iso(row["time"]),
            "algorithm": json.loads(row["body"]).get("algorithm", ""),
        }
        for row in frame.iter_rows(named=True)
    ]


def matching_headlines(
    store: EventStore, pattern: PatternEvent, start: datetime, end: datetime, limit: int = 50
) -> list[dict[str, Any]]:
    """Clean events around a frequent pattern whose text holds every item of its itemset."""
    items = [str(i).lower() for i in (pattern.details.model_extra or {}).get("itemset", [])]
    if not items:
        return []
    frame = store.select(
        "clean_events",
        start=start,
        end=end,
        where=[Filter("source", "in", pattern_sources(pattern) or [""])],
        columns=["timestamp", "payload"],
        order_by=("timestamp", "event_id"),
    )
    found = []
    for ts, text in zip(frame["timestamp"], frame["payload"], strict=True):
        payload = json.loads(text)
        strings = {k: v for k, v in payload.items() if isinstance(v, str)}
        words = set(_WORD.findall(" ".join(strings.values()).lower()))
        if strings and all(item in words for item in items):
            # The longest text is the headline; the other fields (ids, outlet) go beside it.
            headline = max(strings, key=lambda k: len(strings[k]))
            others = {k: v for k, v in strings.items() if k != headline}
            found.append({"time": iso(ts), "text": strings[headline], "fields": others})
            if len(found) == limit:
                break
    return found


def finding_view(
    store: EventStore,
    pattern: PatternEvent,
    minutes: int,
    context_minutes: int,
    max_bars: int,
    max_rows: int,
) -> dict[str, Any]:
    """Everything the finding page draws: series, raw values and alarms around the finding."""
    replay = context_window(pattern, context_minutes)
    start = pattern.timestamp - timedelta(minutes=minutes)
    end = pattern.timestamp + timedelta(minutes=minutes)
    extra = pattern.details.model_extra or {}
    labels = verdicts(list_annotations(store, [pattern.pattern_id]))
    return {
        "pattern": pattern.model_dump(mode="json"),
        "verdict": labels.get(pattern.pattern_id, "unreviewed"),
        "start": iso(start),
        "end": iso(end),
        "change_point": extra.get("change_point") or iso(pattern.timestamp),
        "streams": [
            {
                **feature_series(store, stream, start, end, max_bars),
                "raw": raw_values(store, stream, start, end, max_rows),
            }
            for stream in pattern.source_streams
        ],
        "signals": signals(store, pattern.source_streams, start, end),
        "headlines": matching_headlines(store, pattern, start, end),
        # The window the card's replay command names: the finding's clean-data context.
        "replay": {"start": iso(replay[0]), "end": iso(replay[1]), "sources": pattern_sources(pattern)},
    }


def stream_view(
    store: EventStore, stream: str, start: datetime, end: datetime, max_bars: int
) -> dict[str, Any]:
    """A stream's features, its findings and every detector's alarms over [start, end)."""
    findings = store.select(
        "pattern_events",
        start=start,
        end=end,
        where=[Filter("source_streams", "has", stream)],
        columns=["pattern_id", "type", "timestamp", "confidence", "algorithm"],
        order_by=("timestamp",),
    )
    judged = verdicts(list_annotations(store, findings["pattern_id"].to_list())) if findings.height else {}
    return {
        **feature_series(store, stream, start, end, max_bars),
        "findings": [
            {**row, "timestamp": iso(row["timestamp"]), "verdict": judged.get(row["pattern_id"], "unreviewed")}
            for row in findings.iter_rows(named=True)
        ],
        "signals": signals(store, [stream], start, end),
    }


def stream_range(
    store: EventStore, stream: str, start: datetime | None, end: datetime | None, span: timedelta
) -> tuple[datetime, datetime]:
    """[start, end) as given; with one bound, `span` from or up to it; with neither, the stream's
    bars of the last `span` up to its newest (all of them when they span less)."""
    if start is not None:
        return start, end or start + span
    if end is not None:
        return end - span, end
    bars = store.extent("features", "bar_time", [Filter("stream", "=", stream)])
    if bars is None:
        now = datetime.now(UTC)
        return now - span, now
    first, last = utc(bars[0]), utc(bars[1]) + timedelta(milliseconds=1)
    return max(first, last - span), last


# -- pipeline ---------------------------------------------------------------
def pipeline_view(store: EventStore, newest_rows: int) -> dict[str, Any]:
    """Rows per step, dead letters by stage and reason, the newest rows per step and the lag."""
    now = datetime.now(UTC)
    steps = []
    for step, table in PIPELINE_STEPS:
        by_group = store.count(table, group_by=_group_column(table))
        newest = store.max_time(table, _group_column(table))
        newest_time = max(newest.values()) if newest else None
        steps.append(
            {
                "step": step,
                "table": table,
                "rows": sum(by_group.values()),
                "by_group": by_group,
                "newest": iso(newest_time) if newest_time else None,
                "newest_rows": _newest_rows(store, table, newest_rows),
            }
        )
    letters = store.select("dead_letters", columns=["stage", "source", "reason"])
    reasons = (
        letters.group_by(["stage", "source", "reason"]).len().sort(["len", "reason"], descending=[True, False])
        if letters.height
        else letters
    )
    landed = store.extent("raw_events", "landed_at")
    newest_event = store.extent("raw_events", "timestamp")
    return {
        "steps": steps,
        "dead_letters": {
            "total": letters.height,
            "reasons": [
                {"stage": r["stage"], "source": r["source"], "reason": r["reason"], "count": r["len"]}
                for r in reasons.iter_rows(named=True)
            ],
        },
        "lag": {
            "now": iso(now),
            "last_landed_at": iso(utc(landed[1])) if landed else None,
            "newest_event": iso(utc(newest_event[1])) if newest_event else None,
            "seconds_since_landing": round((now - utc(landed[1])).total_seconds(), 1) if landed else None,
            "features_behind_raw_s": _behind(steps),
        },
    }


def _group_column(table: str) -> str:
    return {"features": "stream", "detections": "detector", "pattern_events": "type", "pattern_cards": "lang"}.get(
        table, "source"
    )


def _behind(steps: list[dict[str, Any]]) -> float | None:
    """How far the newest feature bar trails the newest raw event, in event time.

    Features are written for every bar of every processed window (findings and alarms only
    when something is found), so they show how far the windowed pipeline has come.
    """
    raw, features = steps[0]["newest"], steps[2]["newest"]
    if raw is None or features is None:
        return None
    return round((parse_iso(raw) - parse_iso(features)).total_seconds(), 1)


def _newest_rows(store: EventStore, table: str, limit: int) -> list[dict[str, Any]]:
    from qraft_core.store.schema import spec

    table_spec = spec(table)
    wanted = [c for c in table_spec.columns if c not in ("body", "values", "names", "items", "markdown", "raw")]
    assert table_spec.time_column is not None
    frame = store.select(
        table, columns=wanted, order_by=(table_spec.time_column,), descending=True, limit=limit
    )
    return [
        {k: iso(v) if isinstance(v, datetime) else _short(v) for k, v in row.items()}
        for row in frame.iter_rows(named=True)
    ]


def _short(value: Any, width: int = 160) -> Any:
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value


# -- evaluation -------------------------------------------------------------
def evaluation_view(store: EventStore, truth_path: Path) -> dict[str, Any] | None:
    """Each truth item with the finding that matched it (and its delay), and the false alarms.

    None when there is no truth file.
    """
    from qraft_core.evaluate import evaluate_findings, finding_items, load_truth

    if not truth_path.is_file():
        return None
    truth = load_truth(truth_path)
    if truth.start is None or truth.end is None:
        return None
    # Through the catalogue: the patterns package would load every detector library first.
    events = [e for page in iter_patterns(store, PatternQuery(truth.start, truth.end)) for e in page]
    n_events = store.count("clean_events", start=truth.start, end=truth.end).get("", 0)
    report = evaluate_findings(finding_items(events), truth, truth.start, truth.end, n_events)
    return {
        "truth_file": str(truth_path),
        "report": report,
        "items": report["truth_items"],
        "false_alarms": [
            {"type": f["type"], "stream": f["stream"], "time": f["time"], "finding": f["finding_id"]}
            for f in report["findings"]
            if f["false_alarm"]
        ],
    }

