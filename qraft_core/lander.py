"""The lander: the long-running consumer that moves events from the bus into `raw_events`.

It fetches batches (by size and time), judges every line of every message on
its own, inserts good events into `raw_events` and everything else into
`dead_letters` with the reason and the raw bytes, and acknowledges the messages
only after both inserts committed. One event id keeps one row (the newest
ingest wins, within and across batches); event times are bounded by origin.
Transient store errors are retried with backoff while the bus is told the
batch is still in progress; permanent ones dead-letter the rows they are about.
Nothing here ends the process but a stop request, which is honoured once the
batch in hand is landed or handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import json
import logging
import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl
from pydantic import ValidationError

from qraft_core.bus.base import BusMessage, BusUnavailable, Consumer
from qraft_core.config import LanderConfig
from qraft_core.events import (
    DEAD_LETTER_KEY,
    MAX_RECORD_BYTES,
    StandardEvent,
    checksum,
    iso,
    safe_text,
    stable_id,
)
from qraft_core.landing.compiled import (
    SOURCE_NAME,
    CompiledRows,
    is_plain,
    line_count,
    lines_of,
    nonblank_lines,
)
from qraft_core.metrics import (
    CONSUMER_LAG,
    EVENTS_DEAD_LETTERED,
    EVENTS_LANDED,
    LAND_BATCH_SECONDS,
    STORE_RETRIES,
)
from qraft_core.scheduling import floor_to
from qraft_core.store.base import STORE_TIME_RANGE, EventStore, Filter, StoreError, StoreUnavailable
from qraft_core.store.clickhouse import ClickHouseStore
from qraft_core.store.sessions import ENGINE

log = logging.getLogger(__name__)

RAW_COLUMNS = ("event_id", "source", "type", "timestamp", "ingest_time", "payload", "parser_version", "raw_checksum")


@dataclass
class LandedBatch:
    """What one batch of messages turned into."""

    raw_events: pl.DataFrame
    dead_letters: pl.DataFrame

    @property
    def landed(self) -> int:
        return self.raw_events.height

    @property
    def dead_lettered(self) -> int:
        return self.dead_letters.height


async def _hand_back(messages: Sequence[BusMessage]) -> None:
    """Give messages back to the bus for redelivery (at once, not after the ack wait)."""
    await asyncio.gather(*(m.nak() for m in messages), return_exceptions=True)


def _source_of(subject: str, prefix: str) -> str:
    return subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else subject


# The `source` label of what the lander counts for a subject that is no valid source name, or
# comes after MAX_SOURCE_LABELS others.
UNKNOWN_SOURCE = "unknown"
# The most distinct source names that get a label of their own: a deployment has a handful of
# sources (configured ones and its own producers); a publisher making up subjects must not add a
# series per subject.
MAX_SOURCE_LABELS = 256


class _SourceLabels:
    """The `source` label of the lander's metrics: a valid source name among the first
    MAX_SOURCE_LABELS seen is one; every other subject counts as UNKNOWN_SOURCE.

    >>> labels = _SourceLabels()
    >>> labels.of("cpu"), labels.of("a b"), labels.of('x"</script>')
    ('cpu', 'unknown', 'unknown')
    >>> [labels.of(f"s{i}") for i in range(MAX_SOURCE_LABELS)][-2:], labels.of("cpu")
    (['s254', 'unknown'], 'cpu')
    """

    def __init__(self) -> None:
        self._names: set[str] = set()

    def of(self, source: str) -> str:
        if not SOURCE_NAME.fullmatch(source):
            return UNKNOWN_SOURCE
        if source not in self._names and len(self._names) < MAX_SOURCE_LABELS:
            self._names.add(source)
        return source if source in self._names else UNKNOWN_SOURCE


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for problem in exc.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "<event>"
        parts.append(f"{key}: {problem['msg']}")
    return safe_text("invalid event: " + "; ".join(parts), 2000)


SUPERSEDED = "superseded"


@dataclass(frozen=True)
class EventTimeBounds:
    """How far an event time may lie from what it is judged against (see `LanderConfig`)."""

    live_max_future: timedelta
    live_max_age: timedelta
    backfill_max_spread: timedelta

    @classmethod
    def of(cls, config: LanderConfig) -> EventTimeBounds:
        return cls(timedelta(seconds=config.live_max_future_s), timedelta(seconds=config.live_max_age_s),
                   timedelta(days=config.backfill_max_spread_days))

    def live_problem(self, timestamp: datetime, ingest_time: datetime) -> str | None:
        if timestamp - ingest_time > self.live_max_future:
            return (f"event time {iso(timestamp)} is {(timestamp - ingest_time).total_seconds():.0f}s after its "
                    f"ingest time (a live source allows {self.live_max_future.total_seconds():.0f}s)")
        if ingest_time - timestamp > self.live_max_age:
            return (f"event time {iso(timestamp)} is {(ingest_time - timestamp).total_seconds():.0f}s before its "
                    f"ingest time (a live source allows {self.live_max_age.total_seconds():.0f}s)")
        return None


def _store_range_problem(row: tuple[Any, ...]) -> str | None:
    low, high = STORE_TIME_RANGE
    for name, value in (("timestamp", row[3]), ("ingest_time", row[4])):
        if not low <= value <= high:
            return f"{name} {value.isoformat()} is outside the store's range ({low.year} to {high.year})"
    return None


# Dead letters one message gets a line each (its first bad lines, whatever order they are found
# in); its further bad lines are counted in one more letter (`_Message.overflow`), so a message of
# millions of short bad lines costs about its size.
MAX_LETTERS_PER_MESSAGE = 10_000
# How often the bus is told the messages of a batch still being judged are in progress (well
# within the consumer's ack wait), so a long judgement is not redelivered meanwhile.
IN_PROGRESS_EVERY_S = 5.0
_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
# What a line that may be an event holds unless it escapes a character (`_may_be_event`).
_EVENT_KEYS = tuple(f'"{name}"'.encode() for name in StandardEvent.model_fields)


def _may_be_event(line: bytes) -> bool:
    """False for a line that cannot be an event: not an object, or lacking a field's key
    (written without escapes). Lines past a message's letter bound are judged whole only if True."""
    return line.lstrip()[:1] == b"{" and (b"\\" in line or all(key in line for key in _EVENT_KEYS))


class _Message:
    """One bus message: its lines, where they start in the batch, its checksum (part of every
    letter id of its lines, computed once, if needed) and its stream sequence (the same on every
    redelivery, distinct for each publish), when the bus tells it."""

    def __init__(self, subject: str, source: str, data: bytes, offset: int, sequence: int | None = None) -> None:
        self.subject = subject
        self.source = safe_text(source)
        self.data = data
        self.line_count = line_count(data)
        self.offset = offset
        self.sequence = sequence
        # Its dead letters so far, at most MAX_LETTERS_PER_MESSAGE of its lowest bad lines: a heap
        # by line index, highest first (negated), so a lower bad line found late takes its place.
        self.letters: list[tuple[int, _Rejection]] = []
        self.overflow: _Rejection | None = None  # the lowest bad line of those past the bound
        self.more = 0  # bad lines past the bound

    @functools.cached_property
    def _ends(self) -> Any:
        """Where each line ends; found only for a message with a line to judge (plain ones are
        decoded whole), and kept as one array, not an object per line."""
        return np.append(np.flatnonzero(np.frombuffer(self.data, np.uint8) == ord("\n")), len(self.data))

    def line(self, index: int) -> bytes:
        start = int(self._ends[index - 1]) + 1 if index else 0
        return self.data[start:int(self._ends[index])]

    @functools.cached_property
    def checksum(self) -> str:
        return checksum(self.data)


@dataclass(slots=True)
class _Rejection:
    """A dead letter in the making; `order` is where the per-line judging of the batch names it:
    (0, the batch position of the line being judged) or, after every line, (1, the kept row's position)."""

    order: tuple[int, int]
    message: _Message
    index: int
    reason: str
    raw: bytes | str
    event_id: object
    event_time: datetime | None


# A row that may land, with its origin, the batch position of its line (`line`) and where it
# stands in the batch (`position`: its line's, or the first line of its id's).
_CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8(), "source": pl.Utf8(), "type": pl.Utf8(),
    "timestamp": pl.Datetime("us", "UTC"), "ingest_time": pl.Datetime("us", "UTC"),
    "payload": pl.Utf8(), "parser_version": pl.Utf8(), "raw_checksum": pl.Utf8(), "origin": pl.Utf8(),
    "line": pl.Int64(), "position": pl.Int64(),
}


class _Judge:
    """Collects the rows and dead letters of one batch; see `land_batch`."""

    def __init__(self, landed_at: datetime, interval: timedelta, bounds: EventTimeBounds) -> None:
        self.landed_at = landed_at
        self.interval = interval
        self.bounds = bounds
        self.messages: list[_Message] = []
        self.offsets: list[int] = []  # of each message's first line in the batch
        self.frames: list[pl.DataFrame] = []  # rows of whole messages (`landing.compiled`)
        self.rows: list[tuple[Any, ...]] = []  # rows of lines judged one by one
        self.letter_ids: set[str] = set()

    def letter_id(self, message: _Message, index: int) -> str:
        """Stable across redeliveries of a message; distinct for each bad line, even identical ones,
        and (with the stream sequence) for each publish of the same message."""
        sequence = () if message.sequence is None else (message.sequence,)
        base = stable_id("lander", message.source, message.checksum, index, *sequence)
        letter, copy = base, 0
        while letter in self.letter_ids:  # the same message twice in one batch
            copy += 1
            letter = stable_id(base, copy)
        self.letter_ids.add(letter)
        return letter

    def reject(self, message: _Message, index: int, reason: str, raw: bytes | str,
               event_id: object = "", event_time: datetime | None = None, order: tuple[int, int] | None = None) -> None:
        rejection = _Rejection(order or (0, message.offset + index), message, index, reason, raw, event_id, event_time)
        if len(message.letters) < MAX_LETTERS_PER_MESSAGE:
            heapq.heappush(message.letters, (-index, rejection))
        elif index < -message.letters[0][0]:  # found late (judged whole, or a version that lost)
            self.count_more(message, heapq.heapreplace(message.letters, (-index, rejection))[1])
        else:
            self.count_more(message, rejection)

    @staticmethod
    def counting_only(message: _Message, index: int) -> bool:
        """Whether bad line `index` of `message` would only be counted: it lies past the line
        kept as the sample of those beyond the letter bound."""
        return message.overflow is not None and index > message.overflow.index

    @staticmethod
    def count_more(message: _Message, rejection: _Rejection | None = None) -> None:
        message.more += 1
        if rejection is not None and (message.overflow is None or rejection.index < message.overflow.index):
            message.overflow = rejection

    def accept(self, message: _Message, index: int, row: tuple[Any, ...], origin: str) -> None:
        self.rows.append((*row, origin, message.offset + index, message.offset + index))

    def locate(self, position: int) -> tuple[_Message, int]:
        """The message and line index of a batch position."""
        message = self.messages[bisect_right(self.offsets, position) - 1]
        return message, position - message.offset

    def batch(self) -> LandedBatch:
        compiled = [frame.with_columns(pl.col("position").alias("line")).select(*_CANDIDATE_SCHEMA)
                    for frame in self.frames]
        if self.rows or len(compiled) != 1:
            rows = pl.DataFrame(self.rows, schema=_CANDIDATE_SCHEMA, orient="row")
            candidates = pl.concat([*compiled, rows]).sort("position")
        else:  # the usual batch: compiled rows only, already in batch order
            candidates = compiled[0]
        kept = self._bound_backfill(self._one_row_per_id(candidates))
        raw = kept.select(*RAW_COLUMNS).with_columns(
            pl.col("timestamp", "ingest_time").dt.cast_time_unit("ms"),
            pl.lit(self.landed_at).dt.cast_time_unit("ms").alias("landed_at"),
        )
        return LandedBatch(raw, self._dead_letters())

    def _one_row_per_id(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """One id, one row: the newest ingest wins (at the place of the id's first row); a different
        older version is a dead letter. Only ids with more than one row are looked at one by one."""
        if candidates["event_id"].n_unique() == candidates.height:  # the usual batch: a tenth of the cost of pairs
            return candidates
        repeated = candidates.select(pl.struct("source", "event_id").is_duplicated()).to_series()
        if not repeated.any():
            return candidates
        kept: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        # The same row delivered twice is stored once, nothing is lost: its first copy stands for
        # it (and, as a version that loses, is one dead letter). Its ingest time is part of it: a
        # version re-sent later is newer than the versions between (as across batches).
        versions = candidates.filter(repeated).unique(
            ["source", "event_id", "type", "timestamp", "payload", "ingest_time"], keep="first", maintain_order=True)
        for row in versions.iter_rows(named=True):
            key = (row["source"], row["event_id"])
            if key not in kept:
                kept[key] = (row["position"], row)
                continue
            position, other = kept[key]
            if all(row[c] == other[c] for c in ("type", "timestamp", "payload")):
                continue  # the kept version again, as a stored one re-sent is (`_resolve_stored_versions`)
            newer, older = (row, other) if row["ingest_time"] >= other["ingest_time"] else (other, row)
            kept[key] = (position, newer)
            message, index = self.locate(older["line"])
            self.reject(message, index, superseded_reason(newer["timestamp"], newer["ingest_time"]),
                        message.line(index), older["event_id"], older["timestamp"], (0, row["position"]))
        winners = pl.DataFrame([{**row, "position": position} for position, row in kept.values()],
                               schema=_CANDIDATE_SCHEMA)
        return pl.concat([candidates.filter(~repeated), winners]).sort("position")

    def _bound_backfill(self, kept: pl.DataFrame) -> pl.DataFrame:
        """History is judged against its own batch: an event far from the median time of its
        source's backfill events in this batch has a broken timestamp, whatever its age."""
        backfill = pl.col("origin") == "backfill"
        if not kept.select(backfill.any()).item():
            return kept
        # The upper median, as `sorted(times)[len(times) // 2]`.
        medians = kept.filter(backfill).group_by("source").agg(
            pl.col("timestamp").sort().get(pl.len() // 2).alias("median"))
        spread = self.bounds.backfill_max_spread
        kept = kept.join(medians, on="source", how="left").sort("position").with_columns(
            (backfill & ((pl.col("timestamp") - pl.col("median") > spread)
                         | (pl.col("median") - pl.col("timestamp") > spread))).alias("far"))
        for row in kept.filter(pl.col("far")).iter_rows(named=True):
            message, index = self.locate(row["line"])
            self.reject(message, index,
                        f"event time {iso(row['timestamp'])} is more than {spread.days} days from the median "
                        f"event time {iso(row['median'])} of its source's backfill batch",
                        message.line(index), row["event_id"], row["timestamp"], (1, row["position"]))
        return kept.filter(~pl.col("far")).drop("median", "far")

    def _dead_letters(self) -> pl.DataFrame:
        letters = []
        low, high = STORE_TIME_RANGE
        overflows = [_overflow_letter(m, m.overflow) for m in self.messages if m.overflow is not None]
        rejections = [rejection for message in self.messages for _, rejection in message.letters]
        for rejection in sorted([*rejections, *overflows], key=attrgetter("order")):
            event_time = rejection.event_time
            if event_time is not None and not low <= event_time <= high:
                event_time = None  # a dead letter keeps such a time in its raw text only
            letters.append({
                "letter_id": self.letter_id(rejection.message, rejection.index),
                "stage": "land",
                "source": safe_text(rejection.message.source, 256),
                "reason": safe_text(rejection.reason, 2000),
                "raw": safe_text(rejection.raw),
                "event_id": safe_text(rejection.event_id, 256),
                "event_time": event_time,
                "window_start": floor_to(event_time, self.interval) if event_time else None,
                "received_at": self.landed_at,
            })
        return pl.DataFrame(letters, schema=_DEAD_SCHEMA)


def _overflow_letter(message: _Message, sample: _Rejection) -> _Rejection:
    """The one dead letter of the bad lines of `message` past MAX_LETTERS_PER_MESSAGE: their
    number, and the first of them (`sample`) as their example, after every other letter of the
    batch. Its id is that of the index past the message's last line: the same in every delivery."""
    reason = (f"{message.more} more bad lines in this message from line {sample.index + 1} on, beyond the "
              f"{MAX_LETTERS_PER_MESSAGE} dead-lettered one by one; the first of them: {sample.reason}")
    return _Rejection((2, message.offset), message, message.line_count, reason, sample.raw, sample.event_id,
                      sample.event_time)


def superseded_reason(timestamp: datetime, ingest_time: datetime) -> str:
    return (f"{SUPERSEDED}: event id re-sent with different content; the version with event time "
            f"{iso(timestamp)} ingested at {iso(ingest_time)} is kept")


def land_batch(
    messages: Sequence[tuple[str, bytes]],
    *,
    subject_prefix: str = "qraft.raw",
    max_payload_bytes: int = MAX_RECORD_BYTES,
    interval: timedelta = timedelta(minutes=1),
    now: datetime | None = None,
    bounds: EventTimeBounds | None = None,
    compiled: bool = True,
    sequences: Sequence[int | None] | None = None,
) -> LandedBatch:
    """Split (subject, data) messages into raw-event rows and dead-letter rows.

    Every message holds newline-delimited events. Each line is judged on its
    own, so one bad line never costs its neighbours, and nothing a line holds
    raises. Every line becomes a row of `raw_events`, a dead letter, or is the
    exact duplicate of a row in the batch. Of two versions of one event id with
    different content, the newer ingest time wins and the other is dead-lettered
    as `superseded`. Event times are bounded (`EventTimeBounds`): live events
    against their ingest time, backfill events against their batch.

    Plain events are decoded and checked a whole message at a time (`landing.compiled`); the
    other lines, and all of them with `compiled=False`, by `_judge_line`, which names reasons.
    Both give the same batch. An empty message is a dead letter; a message's bad lines after
    its first MAX_LETTERS_PER_MESSAGE are counted in one. `sequences` (the stream sequence of each
    message, when the bus tells it) makes each publish of the same bad message letters of its own.

    >>> good = (b'{"event_id":"e1","source":"s","type":"t","timestamp":"2026-01-05T00:00:01Z",'
    ...         b'"ingest_time":"2026-01-05T00:00:02Z","payload":{"p":1},"meta":{"parser_version":"v1"}}')
    >>> batch = land_batch([("qraft.raw.s", good + b"\\n{oops")])
    >>> batch.landed, batch.dead_lettered
    (1, 1)
    >>> batch.dead_letters["reason"][0]
    'malformed JSON: Expecting property name enclosed in double quotes'
    """
    judge = _Judge(now or datetime.now(UTC), interval, bounds or EventTimeBounds.of(LanderConfig()))
    parser = _LineParser()
    rows = CompiledRows()
    offset = 0
    for (subject, data), sequence in zip(messages, sequences or [None] * len(messages), strict=True):
        message = _Message(subject, _source_of(subject, subject_prefix), data, offset, sequence)
        judge.messages.append(message)
        judge.offsets.append(offset)
        offset += message.line_count
        if not data.strip():
            judge.reject(message, 0, "empty message", data[:4096])
            continue
        if compiled:
            judged = rows.add(message.source, message.data, message.line_count, message.offset, max_payload_bytes)
        else:
            judged = nonblank_lines(data)
        for index, line in _picked(data, judged):
            _judge_line(judge, parser, message, index, max_payload_bytes, line)
    if compiled:
        accepted, refused = rows.checked(STORE_TIME_RANGE, (judge.bounds.live_max_future, judge.bounds.live_max_age))
        judge.frames.append(accepted)
        for position in refused:  # the judge names why
            _judge_line(judge, parser, *judge.locate(position), max_payload_bytes)
    return judge.batch()


def _picked(data: bytes, indexes: Sequence[int]) -> Iterator[tuple[int, bytes]]:
    """(index, line) of the lines of `data` at `indexes` (ascending), read in one pass."""
    wanted = iter(indexes)
    next_index = next(wanted, None)
    for index, line in enumerate(lines_of(data)):
        if next_index is None:
            return
        if index == next_index:
            yield index, line
            next_index = next(wanted, None)


def _judge_line(judge: _Judge, parser: _LineParser, message: _Message, index: int, max_payload_bytes: int,
                line: bytes | None = None) -> None:
    """Judge line `index` of `message` (`line`, if the caller holds it)."""
    line, subject = message.line(index) if line is None else line, message.subject
    if judge.counting_only(message, index) and not _may_be_event(line):
        return judge.count_more(message)

    def reject(reason: str, raw: bytes | str = line, event: dict[str, Any] | None = None) -> None:
        event = event or {}
        judge.reject(message, index, reason, raw, event.get("event_id", ""), _iso_utc(event.get("timestamp")))

    if len(line) > max_payload_bytes:
        return reject(f"oversize: {len(line)} bytes > {max_payload_bytes}", line[:4096])
    if line.startswith(_BYTE_ORDER_MARK):
        return reject("malformed JSON: the line begins with a UTF-8 byte order mark")
    try:
        document, finite = parser.parse(line)
    except RecursionError:
        return reject("malformed JSON: nested too deeply")
    except ValueError as exc:
        return reject(f"malformed JSON: {str(exc).split(':')[0]}")
    if not isinstance(document, dict):
        return reject(f"not an event object: {type(document).__name__}")
    if DEAD_LETTER_KEY in document:
        envelope = {} if document[DEAD_LETTER_KEY] is None else document[DEAD_LETTER_KEY]
        if not isinstance(envelope, dict):
            return reject("adapter: malformed dead-letter envelope")
        return reject(f"adapter: {safe_text(envelope.get('reason', 'unparseable record'))}",
                      safe_text(envelope.get("raw", "")))
    # What only the model finds (lone surrogates, deep nesting, huge integers) needs a line that is not plain.
    row = well_formed_row(document, parser.canonical_encoder(line)) if finite and is_plain(line) else None
    if row is None:
        # Not plainly well formed: the model decides, and names what is wrong.
        try:
            event = StandardEvent.model_validate(document)
        except ValidationError as exc:
            return reject(_validation_reason(exc), event=document)
        except (ValueError, TypeError, RecursionError) as exc:
            return reject(f"invalid event: {type(exc).__name__}", event=document)
        row = (event.event_id, event.source, event.type, event.timestamp, event.ingest_time,
               _CANONICAL.encode(event.payload),
               event.meta.parser_version, event.meta.raw_checksum)
        origin = event.meta.origin
    else:
        origin = document["meta"].get("origin", "live")
    if row[1] != message.source:
        return reject(f"source {row[1]!r} published on subject {safe_text(subject)!r}", event=document)
    problem = _store_range_problem(row) or (judge.bounds.live_problem(row[3], row[4]) if origin == "live" else None)
    if problem:
        return reject(problem, event=document)
    judge.accept(message, index, row, origin)
    return None


_EVENT_FIELDS = frozenset(StandardEvent.model_fields)
_ORIGINS = ("live", "backfill")


class _NonFinite(ValueError):
    """A NaN, an Infinity or an overflowing float in a line (the model names where)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _NonFinite(text)
    return value


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


# Built once: json.loads/dumps with options build a new decoder/encoder on every call.
_FINITE_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_DECODER = json.JSONDecoder()
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _canonical(payload: dict[str, Any]) -> str:
    return _CANONICAL.encode(payload)


def _canonical_compiled(payload: dict[str, Any]) -> str:
    return msgspec.json.encode(payload, order="sorted").decode("ascii")


class _LineParser:
    """Parses lines with a compiled decoder; a line it does not accept (malformed, a NaN, an
    overflowing number, nesting too deep) is parsed again by the standard library, which names
    the problem, so every reason stays the one `json` gives. Whatever the compiled decoder
    accepts, `json` accepts as the same document (`test_compiled_decoder_agrees_with_json`)."""

    def __init__(self) -> None:
        self.saw_float = False  # in the line parsed last
        self._decoder = msgspec.json.Decoder(float_hook=self._float)

    def _float(self, text: str) -> float:
        self.saw_float = True
        return _finite_float(text)

    def parse(self, line: bytes) -> tuple[Any, bool]:
        """(document, all numbers finite?); raises ValueError/RecursionError for malformed JSON
        (UnicodeDecodeError, a ValueError, for bytes that are not UTF-8)."""
        self.saw_float = False
        try:
            return self._decoder.decode(line), True
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
        self.saw_float = True  # not known: the slow encoder is always right
        text = line.decode("utf-8")
        try:
            return _FINITE_DECODER.decode(text), True
        except _NonFinite:
            return _DECODER.decode(text), False

    def canonical_encoder(self, line: bytes) -> Callable[[dict[str, Any]], str]:
        """The compiled encoder writes the same text as `_CANONICAL` for printable ASCII text
        without floats or \\u escapes (it spells floats and DEL differently, and does not
        escape non-ASCII)."""
        if self.saw_float or not line.isascii() or b"\x7f" in line or b"\\u" in line:
            return _canonical
        return _canonical_compiled


def _iso_utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def well_formed_row(document: dict[str, Any],
                    canonical: Callable[[dict[str, Any]], str] = _canonical) -> tuple[Any, ...] | None:
    """The raw_events row of an event in the shape adapters publish, checked without the model.

    The document must come from a parse that rejected non-finite numbers. Anything
    unusual (other time formats, odd types) returns None, and
    `StandardEvent` then accepts it or says why not; so this path only ever accepts what the
    model accepts, ~4x faster.

    >>> well_formed_row({"event_id": "e", "source": "s", "type": "t", "timestamp": "2026-01-05T00:00:00Z",
    ...     "ingest_time": "2026-01-05T00:00:01Z", "payload": {"b": 1, "a": "x"},
    ...     "meta": {"parser_version": "v1"}})[5]
    '{"a":"x","b":1}'
    >>> well_formed_row({"event_id": "e", "source": "s", "type": "t", "timestamp": 1767571200,
    ...     "ingest_time": "2026-01-05T00:00:01Z", "payload": {}, "meta": {"parser_version": "v1"}}) is None
    True
    """
    if document.keys() != _EVENT_FIELDS:
        return None
    event_id, source, kind, meta, payload = (
        document["event_id"], document["source"], document["type"], document["meta"], document["payload"]
    )
    if not (
        isinstance(event_id, str) and 0 < len(event_id) <= 256
        and isinstance(source, str) and SOURCE_NAME.fullmatch(source)
        and isinstance(kind, str) and 0 < len(kind) <= 64
        and isinstance(payload, dict) and isinstance(meta, dict)
        and isinstance(meta.get("parser_version"), str) and meta["parser_version"]
        and isinstance(meta.get("raw_checksum", ""), str)
        and meta.get("origin", "live") in _ORIGINS
    ):
        return None
    timestamp, ingest_time = _iso_utc(document["timestamp"]), _iso_utc(document["ingest_time"])
    if timestamp is None or ingest_time is None:
        return None
    return (event_id, source, kind, timestamp, ingest_time,
            canonical(payload),
            meta["parser_version"], meta.get("raw_checksum", ""))


_DEAD_SCHEMA: dict[str, pl.DataType] = {
    "letter_id": pl.Utf8(),
    "stage": pl.Utf8(),
    "source": pl.Utf8(),
    "reason": pl.Utf8(),
    "raw": pl.Utf8(),
    "event_id": pl.Utf8(),
    "event_time": pl.Datetime("ms", "UTC"),
    "window_start": pl.Datetime("ms", "UTC"),
    "received_at": pl.Datetime("ms", "UTC"),
}


# Inserts tried to find the rows a permanent store error is about (~2 log2 of a batch).
BISECT_ATTEMPTS = 64
_TRANSIENT_MARKERS = (
    "timeout", "timed out", "connection refused", "connection reset", "broken pipe", "network_error",
    "socket_timeout", "held by another process", "too_many_simultaneous_queries", "merges are processing",
    "memory_limit_exceeded", "table_is_read_only", "temporarily", "cannot open the store",
    # A full disk or a store mounted read-only: the rows are fine, the store will take them once
    # there is room (dead-lettering them would move good events out of raw_events).
    "not_enough_space", "no space left on device", "read-only file system",
)
_PERMANENT_MARKERS = (
    "too_many_parts", "too many partitions", "cannot_parse", "type_mismatch", "unknown_table",
    "no_such_column", "there_is_no_column", "illegal_type", "illegal_column", "out_of_range",
    "incorrect_data", "cannot_convert", "cannot_insert_null", "arrowinvalid", "arrowtypeerror",
    "unicodeencodeerror", "overflowerror", "lack columns", "computeerror", "schemaerror",
)


def store_error_kind(exc: BaseException) -> Literal["transient", "permanent", "unknown"]:
    """Transient (the store is busy or away: retry), permanent (these rows or this schema will
    never be accepted: dead-letter) or unknown, from the error and its causes.

    >>> store_error_kind(StoreUnavailable("the embedded store is held by another process"))
    'transient'
    >>> store_error_kind(StoreError("Code: 252. DB::Exception: Too many partitions for single INSERT block"))
    'permanent'
    >>> store_error_kind(StoreError("Too many parts (3001). Merges are processing significantly slower (TOO_MANY_PARTS)"))
    'transient'
    >>> store_error_kind(StoreError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"))
    'transient'
    >>> store_error_kind(StoreError("Cannot write to file: No space left on device (CANNOT_WRITE_TO_FILE_DESCRIPTOR)"))
    'transient'
    >>> store_error_kind(StoreError("Cannot open file data/clickhouse/x.bin: Read-only file system"))
    'transient'
    """
    if isinstance(exc, StoreUnavailable):
        return "transient"
    chain: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " ".join(chain).lower()
    if any(marker in text for marker in _TRANSIENT_MARKERS):
        return "transient"
    if any(marker in text for marker in _PERMANENT_MARKERS):
        return "permanent"
    return "unknown"


# Hashes of stored event ids the lander keeps per source (8 bytes each); a source with more
# stored ids in a batch's resend window than this is looked up in the store for every batch.
ID_MEMORY_MAX = 1_000_000
# One warning per this many seconds while the bus does not answer the lag check (a paused server).
LAG_WARNING_EVERY_S = 30.0
# Pieces the memory is kept in before they are joined into one: each batch adds one.
_MEMORY_CHUNKS = 64


def _id_hashes(ids: pl.Series) -> pl.Series:
    """Event ids hashed in polars: the same id always gives the same number within a process."""
    return ids.hash()


@dataclass
class _KnownIds:
    """Hashes of the ids of every raw_events row of one source whose event time lies in
    [start, end): filled by one query, then by every batch this lander, the one writer of
    raw_events, writes (rows it does not insert too: a superset is harmless, it only costs a lookup)."""

    start: datetime
    end: datetime
    hashes: pl.Series  # distinct

    def remember(self, hashes: pl.Series) -> pl.Series:
        """Adds `hashes`; returns those held already.

        One pass over the memory, which is far larger than a batch, looked up in a table of the
        batch's hashes, in polars: a table of the memory would cost more than the pass, and Python
        ints hold the GIL the judging thread needs meanwhile.

        >>> known = _KnownIds(datetime.min, datetime.max, pl.Series([1, 2], dtype=pl.UInt64))
        >>> first = known.remember(pl.Series([3, 4, 3], dtype=pl.UInt64))
        >>> second = known.remember(pl.Series([2, 5, 3], dtype=pl.UInt64))
        >>> first.to_list(), sorted(second), sorted(known.hashes)
        ([], [2, 3], [1, 2, 3, 4, 5])
        """
        batch = hashes.unique()
        held = self.hashes.filter(self.hashes.is_in(batch.implode()))
        self.hashes.append(batch.filter(~batch.is_in(held.implode())) if held.len() else batch)
        if self.hashes.n_chunks() > _MEMORY_CHUNKS:
            self.hashes = self.hashes.rechunk()
        return held


@dataclass
class LanderStats:
    batches: int = 0
    messages: int = 0
    landed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class Lander:
    """Consumes the bus into the store; see the module docstring for the guarantees."""

    def __init__(
        self,
        consumer: Consumer,
        store: EventStore,
        config: LanderConfig,
        *,
        subject_prefix: str = "qraft.raw",
        interval: timedelta = timedelta(minutes=1),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.config = config
        self.subject_prefix = subject_prefix
        self.interval = interval
        self.clock = clock
        self.stats = LanderStats()
        self._source_labels = _SourceLabels()
        if isinstance(store, ClickHouseStore):  # see `LanderConfig.store_keep_open_s`
            store.keep_open_s = max(store.keep_open_s, config.store_keep_open_s)
        self._known: dict[str, _KnownIds] = {}
        self._too_dense: set[str] = set()  # sources whose stored ids do not fit ID_MEMORY_MAX
        self._waiting: list[BusMessage] = []  # of the batch judged while the one before it is written
        self._fetching: asyncio.Task[list[BusMessage]] | None = None  # the batch after that
        self._lag_warned_at: float | None = None

    async def _collect(self, stop: asyncio.Event) -> list[BusMessage]:
        """Messages until the batch is full (by lines) or its time is up."""
        deadline = self.clock() + self.config.batch_timeout_ms / 1000
        taken: list[BusMessage] = []
        lines = 0
        while lines < self.config.batch_size and not stop.is_set():
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            # Messages carry whole batches of events: ask for as many messages as the lines still
            # wanted need at the lines per message seen so far, so a pull never floods the client.
            # The first pull takes one message to learn their size.
            per_message = lines / len(taken) if taken else float(self.config.batch_size)
            wanted = max(1, min(1000, int((self.config.batch_size - lines) / per_message)))
            fetched = await self.consumer.fetch(wanted, max(remaining, 0.05))
            taken.extend(fetched)
            lines += sum(line_count(m.data) for m in fetched)
        return taken

    def _fetched(self) -> list[BusMessage]:
        """The messages of the batch fetched behind the one being judged, once they are in hand."""
        fetching = self._fetching
        if fetching is None or not fetching.done() or fetching.cancelled() or fetching.exception():
            return []
        return fetching.result()

    def _write(self, batch: LandedBatch, give_up: bool) -> LandedBatch:
        """Write a batch in one store session; returns what was written.

        Stored versions an event id supersedes are dead-lettered before they are deleted, so a
        failure at any point leaves nothing lost when the batch is written again. `give_up`
        makes errors of unknown kind permanent.
        """
        with self.store.session():
            raw, dead, written_first = self._resolve_stored_versions(batch)
            rejected = self._insert_or_bisect(raw, give_up)
            if rejected:
                failed = pl.concat([frame.drop("reason") for frame in rejected])
                raw = raw.join(failed.select("source", "event_id", "timestamp"),
                               on=["source", "event_id", "timestamp"], how="anti")
                dead = pl.concat([dead, *(self._letters(frame, "store") for frame in rejected)])
            self.store.insert("dead_letters", dead)
        return LandedBatch(raw, pl.concat([written_first, dead]))

    def _resolve_stored_versions(self, batch: LandedBatch) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """One id, one row across batches: the newest ingest wins, as within a batch.

        Returns the rows to insert, the dead letters to insert with them, and the dead letters of
        stored versions already written (before those versions were deleted)."""
        raw, dead = batch.raw_events, batch.dead_letters
        written_first = dead.clear()
        stored_parts = []
        # Stored versions are looked for within `resend_window_s` of the batch's event times, so the
        # cost follows the batch, not the size of raw_events.
        window = timedelta(seconds=self.config.resend_window_s)
        # Grouped on the columns read: a group of whole rows copies every payload.
        for (source,), group in raw.select("source", "event_id", "timestamp").group_by("source"):
            ids = group["event_id"]  # made distinct where looked up: `remember` makes the hashes so, cheaper
            first, last = group.select(pl.col("timestamp").min(), pl.col("timestamp").max().alias("last")).row(0)
            start, end = first - window, last + window + timedelta(milliseconds=1)
            known = self._known_ids(source, start, end)
            if known is not None:  # only ids the memory may hold can have a stored version
                hashes = _id_hashes(ids)
                held = known.remember(hashes)
                if known.hashes.len() > ID_MEMORY_MAX:  # the next batch reads its own window again
                    del self._known[source]
                if held.is_empty():
                    continue
                ids = ids.filter(hashes.is_in(held.implode()))
            where = [Filter("source", "=", source), Filter("event_id", "in", ids.unique().to_list())]
            stored_parts.append(self.store.select(
                "raw_events", start=start, end=end, where=where, columns=[*RAW_COLUMNS, "landed_at"]))
        stored = pl.concat(stored_parts, how="vertical_relaxed") if stored_parts else pl.DataFrame()
        if stored.is_empty():
            return raw, dead, written_first
        stored = stored.with_columns(pl.col("timestamp", "ingest_time").dt.cast_time_unit("ms"))
        pairs = raw.join(stored, on=["source", "event_id"], suffix="_stored")
        differs = (
            (pl.col("type") != pl.col("type_stored")) | (pl.col("timestamp") != pl.col("timestamp_stored"))
            | (pl.col("payload") != pl.col("payload_stored"))
        )
        # A version already stored as it is (a batch redelivered after a lander died between its
        # insert and its ack) is not inserted again: one id stays one row even before a merge.
        stored_as_is = pairs.filter(~differs).select("source", "event_id").unique()
        raw = raw.join(stored_as_is, on=["source", "event_id"], how="anti")
        differing = pairs.filter(differs).join(stored_as_is, on=["source", "event_id"], how="anti")
        if differing.is_empty():
            return raw, dead, written_first
        newest = pairs.group_by("source", "event_id").agg(pl.col("ingest_time_stored").max().alias("newest"))
        differing = differing.join(newest, on=["source", "event_id"])
        incoming_wins = differing.filter(pl.col("ingest_time") >= pl.col("newest"))
        stored_wins = differing.filter(pl.col("ingest_time") < pl.col("newest")).unique(["source", "event_id"])
        letters = [dead]
        if not incoming_wins.is_empty():
            # The stored versions, then the incoming ones that replace them.
            losers = incoming_wins.select(
                *(pl.col(f"{c}_stored").alias(c) for c in RAW_COLUMNS if c not in ("source", "event_id")),
                "source", "event_id",
                pl.struct(pl.col("timestamp"), pl.col("ingest_time")).alias("winner"),
            )
            written_first = self._letters(losers, "superseded")
            self.store.insert("dead_letters", written_first)
            for (source,), group in incoming_wins.group_by("source"):
                replaced = group["event_id"].unique().to_list()
                self.store.delete("raw_events", [Filter("source", "=", source), Filter("event_id", "in", replaced)])
        if not stored_wins.is_empty():
            losers = stored_wins.select(
                *RAW_COLUMNS,
                pl.struct(pl.col("timestamp_stored").alias("timestamp"), pl.col("newest").alias("ingest_time"))
                .alias("winner"),
            )
            letters.append(self._letters(losers, "superseded"))
            raw = raw.join(stored_wins.select("source", "event_id"), on=["source", "event_id"], how="anti")
        return raw, pl.concat(letters), written_first

    def _known_ids(self, source: str, start: datetime, end: datetime) -> _KnownIds | None:
        """The memory of `source`'s stored ids, made to cover [start, end) by reading the ids of
        the part it did not cover yet; None when they do not fit `ID_MEMORY_MAX`."""
        if source in self._too_dense:
            return None
        known = self._known.get(source)
        if known is not None and known.start <= start and end <= known.end:
            return known
        # Live batches each move the end on by seconds: reading one resend window ahead as well
        # (usually empty: event times to come) spares the next batches a query each.
        ahead = end + timedelta(seconds=self.config.resend_window_s)
        if known is None or end < known.start or known.end < start:  # apart: never read the gap between
            spans, known = [(start, ahead)], _KnownIds(start, ahead, pl.Series(dtype=pl.UInt64))
        else:
            spans = [(a, b) for a, b in ((start, known.start), (known.end, ahead)) if a < b]
            known.start, known.end = min(start, known.start), max(ahead, known.end)
        for a, b in spans:
            stored = self.store.select("raw_events", start=a, end=b, where=[Filter("source", "=", source)],
                                       columns=["event_id"])
            known.remember(_id_hashes(stored["event_id"]))
        if known.hashes.len() <= ID_MEMORY_MAX:
            self._known[source] = known
            return known
        if self._known.pop(source, None) is not None:  # grown too large: start again from this batch
            return self._known_ids(source, start, end)
        self._too_dense.add(source)
        log.info("stored ids of %s in one resend window exceed the lander's memory; every batch is looked up",
                 source)
        return None

    def _letters(self, rows: pl.DataFrame, kind: str) -> pl.DataFrame:
        """Dead letters for raw-event rows: `superseded` ones (with a `winner` column) or ones the
        store refused (with a `reason` column). Ids are stable, so a rewrite stores them once."""
        letters = []
        received_at = datetime.now(UTC)
        for row in rows.iter_rows(named=True):
            if kind == "superseded":
                winner = row["winner"]
                reason = superseded_reason(winner["timestamp"], winner["ingest_time"])
            else:
                reason = row["reason"]
            document = {c: row[c] for c in RAW_COLUMNS}
            letters.append({
                "letter_id": stable_id("lander", kind, row["source"], row["event_id"], row["timestamp"], row["payload"]),
                "stage": "land",
                "source": row["source"],
                "reason": reason,
                "raw": json.dumps(document, default=str, sort_keys=True),
                "event_id": row["event_id"],
                "event_time": row["timestamp"],
                "window_start": floor_to(row["timestamp"], self.interval),
                "received_at": received_at,
            })
        return pl.DataFrame(letters, schema=_DEAD_SCHEMA)

    def _insert_or_bisect(self, rows: pl.DataFrame, give_up: bool) -> list[pl.DataFrame]:
        """Insert rows; a permanent error splits them in halves until the refused rows are found
        (at most `BISECT_ATTEMPTS` tries, then the rest is refused whole). Returns the refused
        rows with a `reason` column; transient errors propagate to be retried."""
        pending, refused, attempts = [rows], [], 0
        while pending:
            chunk = pending.pop()
            try:
                self.store.insert("raw_events", chunk)
                continue
            except StoreError as exc:
                kind = store_error_kind(exc)
                if kind == "transient" or (kind == "unknown" and not give_up):
                    raise
                reason = f"store refused the event ({kind} error): {safe_text(exc, 500)}"
            attempts += 1
            if chunk.height == 1 or attempts >= BISECT_ATTEMPTS:
                log.error("%d events refused by the store: %s", chunk.height, reason)
                refused.append(chunk.with_columns(pl.lit(reason).alias("reason")))
            else:
                half = chunk.height // 2
                pending += [chunk[half:], chunk[:half]]
        return refused

    async def _write_with_retry(
        self, batch: LandedBatch, messages: list[BusMessage], stop: asyncio.Event
    ) -> LandedBatch | None:
        """What was written; None if a stop arrived while the store stayed unavailable.

        Transient errors are retried with backoff for as long as they last; an error of unknown
        kind `max_store_attempts` times, then it is permanent: its rows become dead letters.
        """
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(self._write, batch, attempt >= self.config.max_store_attempts)
            except StoreError as exc:
                self.stats.retries += 1
                STORE_RETRIES.inc()
                log.warning("store write failed (%s, %s); retrying in %.1fs",
                            store_error_kind(exc), exc, delay)
                if stop.is_set():
                    return None
                await self._keep_in_progress(messages)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.config.retry_max_s)

    def _judge(self, messages: Sequence[BusMessage]) -> LandedBatch:
        return land_batch(
            [(m.subject, m.data) for m in messages],
            subject_prefix=self.subject_prefix,
            max_payload_bytes=self.config.max_payload_bytes,
            interval=self.interval,
            bounds=EventTimeBounds.of(self.config),
            sequences=[m.sequence for m in messages],
        )

    async def _judged(self, messages: Sequence[BusMessage]) -> LandedBatch:
        """`_judge` in a thread, telling the bus every IN_PROGRESS_EVERY_S that the messages (and
        the batch fetched behind them) are still being worked on."""
        judging = asyncio.ensure_future(asyncio.to_thread(self._judge, messages))
        while not (await asyncio.wait({judging}, timeout=IN_PROGRESS_EVERY_S))[0]:
            await self._keep_in_progress(messages)
        return judging.result()

    async def _keep_in_progress(self, messages: Sequence[BusMessage]) -> None:
        """Keep the bus from redelivering what is still being landed, and the batches behind it."""
        held = {id(m): m for m in [*messages, *self._waiting, *self._fetched()]}
        await asyncio.gather(*(m.in_progress() for m in held.values()), return_exceptions=True)

    async def _land(self, batch: LandedBatch, messages: list[BusMessage], stop: asyncio.Event,
                    started: float) -> int:
        """Write a judged batch and acknowledge its messages, or hand them back if a stop came
        while the store was unavailable; returns the number of messages landed."""
        written = await self._write_with_retry(batch, messages, stop)
        if written is None:
            await _hand_back(messages)
            return 0
        await asyncio.gather(*(m.ack() for m in messages))
        LAND_BATCH_SECONDS.observe(time.perf_counter() - started)
        self._count(written, len(messages))
        return len(messages)

    async def land_once(self, stop: asyncio.Event | None = None) -> int:
        """Fetch, land and acknowledge one batch; returns the number of messages handled."""
        stop = stop or asyncio.Event()
        messages = await self._collect(stop)
        if not messages:
            return 0
        started = time.perf_counter()
        return await self._land(await self._judged(messages), messages, stop, started)

    def _count(self, batch: LandedBatch, messages: int) -> None:
        self.stats.batches += 1
        self.stats.messages += messages
        self.stats.landed += batch.landed
        self.stats.dead_lettered += batch.dead_lettered
        for source, n in batch.raw_events.group_by("source").len().iter_rows():
            EVENTS_LANDED.labels(self._source_labels.of(source)).inc(n)
            self.stats.by_source[source] = self.stats.by_source.get(source, 0) + n
        if batch.dead_lettered:
            for source, n in batch.dead_letters.group_by("source").len().iter_rows():
                EVENTS_DEAD_LETTERED.labels(self._source_labels.of(source)).inc(n)

    async def _lag(self) -> int | None:
        """Messages not yet landed, or None while the bus does not answer (warned once per
        LAG_WARNING_EVERY_S: a paused or unreachable bus is waited for, nothing is lost)."""
        try:
            return await self.consumer.pending()
        except BusUnavailable as exc:
            now = self.clock()
            if self._lag_warned_at is None or now - self._lag_warned_at >= LAG_WARNING_EVERY_S:
                self._lag_warned_at = now
                log.warning("lag check: %s; waiting for the bus", exc)
            return None

    async def run(self, stop: asyncio.Event, until_idle: bool = False) -> LanderStats:
        """Land until `stop` is set (or, with `until_idle`, until nothing is pending).

        Three batches are in hand at once: batch N is written in its thread while batch N+1 is
        judged in another and batch N+2 is fetched (the store's insert and the bus's socket wait
        without the GIL, so they overlap the judging). Writes stay one at a time and in order: a
        batch's stored versions (`_resolve_stored_versions`) include every batch before it. A
        stop hands back the batches behind the write in flight.
        """
        writing: asyncio.Task[int] | None = None
        while not stop.is_set():
            messages: list[BusMessage] = []
            try:
                try:
                    messages = await (self._fetching or self._collect(stop))
                finally:
                    self._fetching = None  # in hand, or failed: awaited once
                started = time.perf_counter()
                batch = None
                if messages:
                    self._waiting = messages
                    self._fetching = asyncio.create_task(self._collect(stop))
                    batch = await self._judged(messages)
                if writing is not None:
                    try:
                        await writing
                    finally:
                        writing = None
                if batch is None:
                    lag = await self._lag()
                    if lag is not None:
                        CONSUMER_LAG.set(lag)
                    if until_idle and lag == 0:
                        break
                elif stop.is_set():
                    await _hand_back(messages)
                else:
                    writing = asyncio.create_task(self._land(batch, messages, stop, started))
            except Exception:  # a long-running process outlives any one bad batch
                log.exception("landing a batch failed; the bus will redeliver it")
                await _hand_back(messages)
                await asyncio.sleep(1.0)
            finally:
                self._waiting = []
        if writing is not None:
            try:
                await writing
            except Exception:
                log.exception("landing a batch failed; the bus will redeliver it")
        if self._fetching is not None:  # fetched while the stop came
            fetching, self._fetching = self._fetching, None
            try:
                await _hand_back(await fetching)
            except Exception:  # a failed fetch holds nothing to hand back
                log.exception("fetching a batch failed")
        if isinstance(self.store, ClickHouseStore):
            ENGINE.close()  # kept open between batches (`store_keep_open_s`); done with it for good
        return self.stats
