"""Human annotations on patterns: verdicts (confirmed / false alarm) and notes.

A pattern's verdict is its latest `confirmed` or `false_alarm` annotation;
notes never change a verdict. Verdicts give each detector a count of
confirmed findings and false alarms, and the confirmed ones are the human
ground truth detectors can be scored against.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import polars as pl
from pydantic import BaseModel, Field, ValidationError

from qraft_core.audit import record_audit
from qraft_core.events import PatternEvent, iso
from qraft_core.store.base import EventStore, Filter

Label = Literal["confirmed", "false_alarm", "note"]
VERDICTS = ("confirmed", "false_alarm")
MAX_NOTE = 4000


class UnknownPattern(LookupError):
    """No pattern event has this id."""


class Annotation(BaseModel):
    annotation_id: str
    pattern_id: str
    label: Label
    note: str = Field(default="", max_length=MAX_NOTE)
    author: str = Field(default="", max_length=200)
    created_at: datetime


class HumanTruth(NamedTuple):
    type: str
    stream: str
    time: datetime


def add_annotation(
    store: EventStore,
    pattern_id: str,
    label: Label,
    note: str = "",
    author: str = "",
    actor: str = "cli",
    now: datetime | None = None,
) -> Annotation:
    """Attach an annotation to an existing pattern and record it in the audit log; ValueError names
    a field that does not fit (a note over MAX_NOTE characters)."""
    if label not in ("confirmed", "false_alarm", "note"):
        raise ValueError(f"label must be confirmed, false_alarm or note (got {label!r})")
    with store.session():
        if store.count("pattern_events", where=[Filter("pattern_id", "=", pattern_id)]).get("", 0) == 0:
            raise UnknownPattern(f"no pattern with id {pattern_id!r}")
        try:
            annotation = Annotation(
                annotation_id=str(uuid.uuid4()),
                pattern_id=pattern_id,
                label=label,
                note=note,
                author=author or actor,
                created_at=now or datetime.now(UTC),
            )
        except ValidationError as exc:  # too long a note or author: one line per field, not pydantic's dump
            problems = (f"{'.'.join(map(str, found['loc']))}: {found['msg']}" for found in exc.errors())
            raise ValueError("; ".join(problems)) from None
        store.insert("annotations", pl.DataFrame([annotation.model_dump()]))
        record_audit(store, actor, "annotate", pattern_id, None, annotation.model_dump(mode="json"))
    return annotation


def list_annotations(store: EventStore, pattern_ids: Sequence[str] | None = None) -> list[Annotation]:
    """Annotations (of the given patterns, or all), oldest first."""
    where = [Filter("pattern_id", "in", list(pattern_ids))] if pattern_ids is not None else []
    frame = store.select("annotations", where=where, order_by=("created_at", "annotation_id"))
    return [Annotation.model_validate(row) for row in frame.iter_rows(named=True)]


def verdicts(annotations: Sequence[Annotation]) -> dict[str, str]:
    """pattern_id → its latest verdict (notes ignored).

    >>> t = datetime(2026, 1, 5, tzinfo=UTC)
    >>> a = [Annotation(annotation_id="1", pattern_id="p", label="false_alarm", created_at=t),
    ...      Annotation(annotation_id="2", pattern_id="p", label="confirmed", created_at=t.replace(hour=1)),
    ...      Annotation(annotation_id="3", pattern_id="p", label="note", created_at=t.replace(hour=2))]
    >>> verdicts(a)
    {'p': 'confirmed'}
    """
    latest: dict[str, str] = {}
    for annotation in sorted(annotations, key=lambda a: (a.created_at, a.annotation_id)):
        if annotation.label in VERDICTS:
            latest[annotation.pattern_id] = annotation.label
    return latest


def _annotated_patterns(store: EventStore, pattern_ids: Sequence[str]) -> list[PatternEvent]:
    if not pattern_ids:
        return []
    frame = store.select(
        "pattern_events", where=[Filter("pattern_id", "in", list(pattern_ids))], columns=["body"]
    )
    return [PatternEvent.model_validate(json.loads(body)) for body in frame["body"]]


def detector_stats(store: EventStore) -> dict[str, dict[str, float | int | None]]:
    """Per detector (algorithm name): confirmed, false_alarm, notes and precision over verdicts
    (None while nobody judged its findings: unreviewed is not useless)."""
    annotations = list_annotations(store)
    verdict_of = verdicts(annotations)
    notes = Counter(a.pattern_id for a in annotations if a.label == "note")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for pattern in _annotated_patterns(store, sorted({a.pattern_id for a in annotations})):
        for name in sorted({algo.name for algo in (pattern.algorithms or [pattern.algorithm])}):
            if pattern.pattern_id in verdict_of:
                counts[name][verdict_of[pattern.pattern_id]] += 1
            counts[name]["notes"] += notes[pattern.pattern_id]
    stats: dict[str, dict[str, float | int | None]] = {}
    for name in sorted(counts):
        confirmed, false_alarm = counts[name]["confirmed"], counts[name]["false_alarm"]
        judged = confirmed + false_alarm
        stats[name] = {
            "confirmed": confirmed,
            "false_alarm": false_alarm,
            "notes": counts[name]["notes"],
            "precision": round(confirmed / judged, 4) if judged else None,
        }
    return stats


def human_truth(store: EventStore) -> list[HumanTruth]:
    """Confirmed patterns as (type, stream, time), one item per stream, sorted."""
    confirmed = [pid for pid, verdict in verdicts(list_annotations(store)).items() if verdict == "confirmed"]
    items = {
        HumanTruth(pattern.type.value, stream, pattern.timestamp)
        for pattern in _annotated_patterns(store, confirmed)
        for stream in pattern.source_streams
    }
    return sorted(items, key=lambda t: (t.time, t.type, t.stream))


def annotation_line(annotation: Annotation) -> dict[str, str]:
    """The fields a card shows for one annotation."""
    return {
        "label": annotation.label,
        "author": annotation.author,
        "created_at": iso(annotation.created_at),
        "note": " ".join(annotation.note.split()),  # one line: a note's line breaks cannot forge card lines
    }
