"""Whole messages of plain events, decoded in compiled code and checked as columns.

The lander's judge (`qraft_core.lander`) takes a line at a time in Python and names what is wrong
with it. Nearly every line is an event in the shape adapters publish, and for those this module
does the judge's work on a whole message at once: msgspec decodes all its lines into typed structs
(field types, lengths, the source name and `meta.origin` are checked in C), payloads are written
canonically by msgspec, and event times are parsed and bounded as polars columns. A line is
accepted here only where the judge would accept it as the same row; every other line (malformed,
unusual, out of bounds, or merely outside what this path can prove) goes to the judge, which
names the reason. `tests/unit/test_fuzz_land_batch.py` checks that both give the same batch.
"""

from __future__ import annotations

import io
import math
import re
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from itertools import compress
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa

from qraft_core.events import MAX_INT_BITS, MAX_NESTING

# Digits an integer of MAX_INT_BITS bits can have: a line with a longer run of digits may hold an
# integer the event model refuses (msgspec reads integers of any size).
_INT_DIGITS = int(MAX_INT_BITS * math.log10(2))
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % _INT_DIGITS)


def is_plain(line: bytes) -> bool:
    """A line that cannot hold what only the event model finds: no \\u escapes (the only way to
    a lone surrogate), no DEL (written differently by the two encoders), at most MAX_NESTING
    brackets (so no payload nested deeper) and no integer longer than the model allows."""
    return (
        b"\\u" not in line and b"\x7f" not in line
        and line.count(b"[") + line.count(b"{") <= MAX_NESTING
        and not (len(line) >= _INT_DIGITS and _LONG_NUMBER.search(line))
    )


class _NonFiniteFloat(ValueError):
    pass


def _float_as_python_writes_it(text: str) -> msgspec.Raw:
    """Floats are kept as the text `json.dumps` writes for them (msgspec spells exponents
    differently), so payloads are byte for byte the judge's; NaN-like overflows are refused."""
    value = float(text)
    if not math.isfinite(value):
        raise _NonFiniteFloat(text)
    return msgspec.Raw(repr(value).encode())


# Fields are declared in the order adapters write keys (sorted, `StandardEvent.to_json_bytes`):
# msgspec looks for the next key at the next field first, so decoding needs no search.
class _Meta(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """`EventMeta` without extras (extras are the judge's: it checks their content)."""

    origin: Literal["live", "backfill"] = "live"
    parser_version: Annotated[str, msgspec.Meta(min_length=1)]
    raw_checksum: str = ""


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`StandardEvent` with its times still text and its source unchecked: a row is kept only if its
    source is the message's, whose name is checked once (`SOURCE_NAME`). Not tracked by the
    garbage collector (they hold no cycles): tens of thousands of live objects make every
    collection slow."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    ingest_time: str
    meta: _Meta
    payload: msgspec.Raw  # as sent: stored so where it is canonical (`CompiledRows._payload_column`)
    source: str
    timestamp: str
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


# What `StandardEvent` allows as a source name.
SOURCE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_MESSAGE = msgspec.json.Decoder(list[_Event])
_LINE = msgspec.json.Decoder(_Event)
_PAYLOAD = msgspec.json.Decoder(dict[str, Any], float_hook=_float_as_python_writes_it)
_SORTED = msgspec.json.Encoder(order="sorted")
_SOURCE = attrgetter("source")


def line_count(data: bytes) -> int:
    """The number of lines of `data` (one more than its newlines).

    `bytes.count` goes a byte at a time; numpy compares a message of thousands of events several
    times faster, and is only worth its overhead on large messages.

    >>> line_count(b"a\\nb"), line_count(b"a\\n" * 40_000), line_count(b"")
    (2, 40001, 1)
    """
    if len(data) < 65_536:
        return data.count(b"\n") + 1
    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == ord("\n"))) + 1


# Line indexes to judge are kept 4 bytes each: a message may hold millions of bad lines.
_INDEX = "I"


def lines_of(data: bytes) -> Iterator[bytes]:
    """The lines of `data`, one at a time (a message of millions of short lines split at once is
    an object per line, many times its own size).

    >>> list(lines_of(b"a\\n\\nb")), list(lines_of(b"a\\n")), list(lines_of(b""))
    ([b'a', b'', b'b'], [b'a', b''], [b''])
    """
    line = b"\n"  # as if after a newline: no data is one empty line
    for line in io.BytesIO(data):
        yield line[:-1] if line[-1:] == b"\n" else line
    if line[-1:] == b"\n":
        yield b""


def nonblank_lines(data: bytes) -> Sequence[int]:
    """The indexes of the lines of `data` that hold more than blanks.

    >>> list(nonblank_lines(b"a\\n \\n\\nb"))
    [0, 3]
    """
    return array(_INDEX, (index for index, line in enumerate(lines_of(data)) if line.strip()))


def _longest_line(data: bytes) -> int:
    """The length of the longest line of `data`, found without splitting it into lines, a block at a
    time (a message of millions of short lines would otherwise need arrays many times its size).

    >>> _longest_line(b"ab\\ncde\\n"), _longest_line(b"abcd"), _longest_line(b""), _longest_line(b"a\\n" * 70_000 + b"bb")
    (3, 4, 0, 2)
    """
    bytes_ = np.frombuffer(data, np.uint8)
    longest, previous = 0, -1  # the end of the line before the block
    for start in range(0, len(data), _BLOCK):
        ends = np.flatnonzero(bytes_[start:start + _BLOCK] == ord("\n")) + start
        if len(ends):
            longest = max(longest, int(np.diff(ends, prepend=previous).max()) - 1)
            previous = int(ends[-1])
    return max(longest, len(data) - previous - 1)


# Bytes `_longest_line` looks at at once.
_BLOCK = 1 << 16


def _all_plain(data: bytes, max_payload_bytes: int) -> bool:
    """`is_plain` but for nesting, and within the size limit, for every line of `data`, checked on
    them all at once (no digit run spans a newline); nesting is bounded on the decoded payloads
    (`CompiledRows.checked`)."""
    if len(data) > min(max_payload_bytes, _INT_DIGITS - 1):  # a line may be too long or hold a long number
        longest = _longest_line(data)
        if longest > max_payload_bytes or (longest >= _INT_DIGITS and _LONG_NUMBER.search(data)):
            return False
    # Most messages hold no backslash at all, which one memchr finds.
    return (b"\\" not in data or b"\\u" not in data) and b"\x7f" not in data


def _decode(data: bytes, lines: int, max_payload_bytes: int) -> tuple[list[_Event], Sequence[int], Sequence[int]]:
    """(events, the line index of each, the indexes of non-blank lines left to the judge) of a
    message of `lines` lines.

    A message is decoded whole, as one JSON array of its lines; a blank line, a bad one or one
    holding more than one value fails that, and the lines are decoded one by one."""
    if _all_plain(data, max_payload_bytes):
        try:
            events = _MESSAGE.decode(b"[" + data.replace(b"\n", b",") + b"]")
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
        else:
            if len(events) == lines:
                return events, range(len(events)), []
    events, indexes, judged = [], [], array(_INDEX)
    for index, line in enumerate(lines_of(data)):
        if not line.strip():
            continue
        if len(line) <= max_payload_bytes and is_plain(line):
            try:
                events.append(_LINE.decode(line))
                indexes.append(index)
                continue
            except (msgspec.DecodeError, ValueError):
                pass
        judged.append(index)
    return events, indexes, judged


def _ascii_escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _canonical_payloads(payloads: list[dict[str, Any]], ascii_only: bool) -> bytes:
    """Compact JSON with sorted keys and non-ASCII text escaped, as `json.dumps` writes it, a
    line each (JSON so written holds no newline)."""
    encoded = _SORTED.encode_lines(payloads)
    if ascii_only or encoded.isascii():
        return encoded
    return _NON_ASCII.sub(_ascii_escaped, encoded.decode()).encode()


def _terminated_column(name: str, data: bytes, terminator: bytes) -> pl.Series:
    """The texts of `data` (UTF-8), each ended by `terminator`, which none holds, as a text column
    built on one buffer (not from a Python object per text)."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord(terminator))
    # The texts without their terminators: the i-th ends i bytes earlier once they are taken out.
    offsets = np.concatenate(([0], ends - np.arange(len(ends)))).astype(np.int64)
    text = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data.replace(terminator, b"")))
    return pl.Series(name, text, dtype=pl.Utf8)


def _texts_column(name: str, texts: list[str]) -> pl.Series:
    """A column of the values of `texts`, each a message's values joined by NUL: a decoded value
    of a plain line holds no NUL (JSON text spells it only as a \\u escape, and control characters
    are refused raw)."""
    return _terminated_column(name, "".join(text + "\x00" for text in texts).encode(), b"\x00")


# Event times `datetime.fromisoformat` reads and polars reads as the same instant: digits are
# ASCII, seconds below 60 (polars carries 60 into the next minute), a zone (naive times are the
# judge's), offsets below a day.
_ISO_TIME = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{1,6})?"
             r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")


def _with_instants(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    """Event-time columns as UTC microseconds; null where the text is not one `_ISO_TIME` allows.

    Arrow's ISO 8601 cast takes a tenth of the time of polars' strptime, but refuses a whole
    column for one impossible time of the right shape (February 30th): polars then reads the
    column, with null for such a time."""
    shaped = frame.select(pl.when(pl.col(name).str.contains(_ISO_TIME)).then(pl.col(name)) for name in names)
    try:
        parsed = [pl.Series(name, shaped[name].to_arrow().cast(pa.timestamp("us", "UTC"))) for name in names]
    except pa.ArrowInvalid:
        parsed = [shaped[name].str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%#z", strict=False)
                  for name in names]
    return frame.with_columns(parsed)


# A value of a flat payload as `json.dumps` writes it, in a message of printable ASCII without \\u
# escapes (`_all_plain`): text with only the short escapes `json` writes, an integer (not -0),
# true, false or null. Floats are left out: only re-encoding proves their spelling.
_CANONICAL_VALUE = r'(?:"(?:[ !#-\[\]-~]|\\["\\bfnrt])*"|0|-?[1-9][0-9]*|true|false|null)'
# Keys a template names as they are, in both Python's and polars' regexes.
_TEMPLATE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Each template is one regex pass over its rows: messages of more key sets than this in one batch
# (publishers of ever new keys) are decoded and written again instead.
_TEMPLATES_PER_BATCH = 32


def _canonical_keys(payload: msgspec.Raw) -> tuple[str, ...] | None:
    """The keys of `payload`, if it is a flat object of keys `_TEMPLATE_KEY` allows and values
    `_CANONICAL_VALUE` allows, written canonically (sorted keys, compact, as `json.dumps` writes
    it); otherwise None. A message whose first payload is such is taken to be from a publisher
    that writes canonical payloads (`StandardEvent.to_json_bytes`), and the others are checked
    against the template of these keys (`CompiledRows._payload_column`)."""
    try:
        decoded = _PAYLOAD.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if not all(isinstance(value, str | int | None) for value in decoded.values()):  # floats are Raw
        return None
    if not all(map(_TEMPLATE_KEY.fullmatch, decoded)) or _SORTED.encode(decoded) != memoryview(payload):
        return None
    return tuple(decoded)


def _template(keys: tuple[str, ...]) -> str:
    """A regex matching exactly the canonical texts of flat payloads of `keys` (sorted, distinct).

    >>> import re
    >>> [bool(re.fullmatch(_template(("a", "b")), text)) for text in
    ...  ('{"a":1,"b":"x\\\\n"}', '{"b":1,"a":2}', '{"a":1,"a":1,"b":2}', '{"a":1.0,"b":2}', '{"a":-0,"b":2}')]
    [True, False, False, False, False]
    """
    return "^\\{" + ",".join(f'"{key}":{_CANONICAL_VALUE}' for key in keys) + "\\}$"


def _payload_dicts(raws: list[msgspec.Raw]) -> tuple[list[dict[str, Any]], set[int]]:
    """The payloads decoded, and the indexes of those that are not objects of finite numbers
    (left to the judge, which names the problem)."""
    try:
        return _PAYLOAD.decode_lines(b"\n".join(raws)), set()  # a payload is one value and holds no newline
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    decoded, refused = [], set()
    for index, raw in enumerate(raws):
        try:
            decoded.append(_PAYLOAD.decode(raw))
        except (msgspec.DecodeError, ValueError, RecursionError):
            refused.add(index)
    return decoded, refused


def _canonical_text(payload: str) -> str | None:
    """`payload` (ASCII) as `json.dumps` writes it, or None if it is not an object of finite numbers."""
    try:
        return _canonical_payloads([_PAYLOAD.decode(payload)], True)[:-1].decode()
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


# The text columns of an event and of its meta, read with one getter each.
_EVENT_TEXTS = {name: attrgetter(name) for name in ("event_id", "type", "timestamp", "ingest_time")}
_META_TEXTS = {name: attrgetter(name) for name in ("parser_version", "raw_checksum", "origin")}
_META = attrgetter("meta")


class CompiledRows:
    """The rows of the plain lines of a batch's messages, gathered as columns and checked at once."""

    def __init__(self) -> None:
        # Each text column, a text per message: its values joined by NUL (`_texts_column`).
        self._texts: dict[str, list[str]] = {name: [] for name in (*_EVENT_TEXTS, *_META_TEXTS)}
        self._sources: list[tuple[str, int]] = []  # (source, rows) of each message: all its rows are of its source
        # Lines of payloads, a buffer per message: canonical, or as sent where they are to be
        # checked against the template of their message.
        self._payloads: list[bytes] = []
        self._templates: dict[tuple[str, ...], int] = {}
        self._template_of_rows: list[tuple[int, int]] = []  # (template or -1, rows) of each message
        self._positions: list[int] = []

    def add(self, source: str, data: bytes, lines: int, offset: int, max_payload_bytes: int) -> Sequence[int]:
        """Decodes the `lines` lines of a message of `source`, its first line at batch position
        `offset`; returns the indexes of the non-blank lines left to the judge."""
        if not SOURCE_NAME.fullmatch(source):  # no event of a source so named lands: the judge says why
            return nonblank_lines(data)
        events, indexes, judged = _decode(data, lines, max_payload_bytes)
        if not all(map(source.__eq__, map(_SOURCE, events))):  # lines of another source: the judge names the subject
            matches = [event.source == source for event in events]
            judged = sorted([*judged, *(i for i, match in zip(indexes, matches, strict=True) if not match)])
            events, indexes = list(compress(events, matches)), list(compress(indexes, matches))
        if not events:
            return judged
        raws, ascii_only = [event.payload for event in events], data.isascii()
        keys = _canonical_keys(raws[0]) if ascii_only else None
        if keys is None or (keys not in self._templates and len(self._templates) >= _TEMPLATES_PER_BATCH):
            payloads, refused = _payload_dicts(raws)
            if refused:  # the judge names what is wrong with them
                judged = sorted([*judged, *(indexes[i] for i in refused)])
                kept = [i not in refused for i in range(len(events))]
                events, indexes = list(compress(events, kept)), list(compress(indexes, kept))
                if not events:
                    return judged
            self._payloads.append(_canonical_payloads(payloads, ascii_only))
            template = -1
        else:
            self._payloads.append(b"\n".join(raws) + b"\n")
            template = self._templates.setdefault(keys, len(self._templates))
        self._template_of_rows.append((template, len(events)))
        self._sources.append((source, len(events)))
        texts, metas = self._texts, list(map(_META, events))
        for name, field in _EVENT_TEXTS.items():
            texts[name].append("\x00".join(map(field, events)))
        for name, field in _META_TEXTS.items():
            texts[name].append("\x00".join(map(field, metas)))
        self._positions.extend(map(offset.__add__, indexes))
        return judged

    def _source_column(self) -> pl.Series:
        """Each row's source: its message's, repeated by one gather (a Series per message costs
        far more than its rows where messages hold one event each)."""
        names, rows = zip(*self._sources, strict=True) if self._sources else ((), ())
        return pl.Series("source", names, dtype=pl.Utf8).gather(np.repeat(np.arange(len(names)), rows))

    def _payload_column(self) -> pl.Series:
        """Every row's canonical payload; null for one that is not an object of finite numbers.

        Payloads kept as sent are checked against their message's template, and those that do not
        match it are re-encoded one by one."""
        payloads = _terminated_column("payload", b"".join(self._payloads), b"\n")
        if not self._templates:
            return payloads
        template_ids, rows = zip(*self._template_of_rows, strict=True)
        row_templates = np.repeat(np.array(template_ids, dtype=np.int64), rows)
        for keys, template in self._templates.items():
            (checked,) = np.nonzero(row_templates == template)
            # The usual batch: one publisher, one template, every row checked against it.
            sent = payloads if checked.size == payloads.len() else payloads.gather(checked)
            matches = sent.str.contains(_template(keys)).to_numpy()
            others = checked[~matches]
            if others.size:
                texts = [_canonical_text(text) for text in payloads.gather(others).to_list()]
                payloads = payloads.scatter(others, pl.Series(texts, dtype=pl.Utf8))
        return payloads

    def checked(
        self, store_range: tuple[datetime, datetime], live_bounds: tuple[timedelta, timedelta]
    ) -> tuple[pl.DataFrame, list[int]]:
        """The rows the judge would accept as they are (with `origin` and batch `position`), and
        the positions of the others, left to the judge: rows whose times lie in `store_range`
        and, for live events, at most `live_bounds` (future, age) from their ingest time."""
        frame = _with_instants(pl.DataFrame([
            *(_texts_column(name, texts) for name, texts in self._texts.items()),
            self._source_column(),
            self._payload_column(),
            pl.Series("position", self._positions, dtype=pl.Int64),
        ]), "timestamp", "ingest_time")
        low, high = store_range
        future, age = live_bounds
        ahead = pl.col("timestamp") - pl.col("ingest_time")
        accepted = (
            # Brackets, in strings too, bound the nesting: the judge's plain lines hold at most
            # MAX_NESTING, two of them outside the payload.
            (pl.col("payload").str.count_matches(r"[\[{]") <= MAX_NESTING - 2)
            & pl.col("timestamp").is_between(low, high) & pl.col("ingest_time").is_between(low, high)
            & ((pl.col("origin") != "live") | ((ahead <= future) & (-ahead <= age)))
        ).fill_null(False)
        accepted_rows = frame.select(accepted).to_series()
        if accepted_rows.all():  # the usual batch: nothing to filter
            return frame, []
        refused = frame.filter(~accepted_rows)["position"].to_list()
        return frame.filter(accepted_rows), refused
