"""File replay: CSV, TSV, JSONL or Parquet, published at a speed factor of event time.

CSV and JSONL may be gzip-compressed (`.csv.gz`) and UTF-8 or UTF-16 (with or without its byte order mark),
or, when `encoding` says so, Windows-1252 (what Excel's plain "CSV" is in Western Europe).
A JSON file holding one array of objects (as `json.dump` writes a list) is read like JSON lines.

The number of records published from each file is kept in a state file, so a
restarted replay resumes where it stopped instead of republishing.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import gzip
import io
import math
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

import polars as pl
from pydantic import BaseModel, Field

from qraft_core.adapters.base import AdapterStats, RecordAdapter, register_adapter
from qraft_core.adapters.live import JsonState
from qraft_core.adapters.parsers import GenericOptions, decode_json_record, raw_json
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError, SourceConfig
from qraft_core.events import MAX_DEAD_LETTER_RAW, MAX_RECORD_BYTES, StandardEvent, safe_text

# Field separators a CSV file may use; `auto` takes the one the header line holds most of.
CSV_DELIMITERS = (",", ";", "\t", "|")
# A JSON array is read whole (its objects are not one a line); beyond this size it must be JSON lines.
MAX_JSON_ARRAY_BYTES = 1 << 30
# What changes the bracket depth of JSON text, or may (a quote opens or closes a string).
_JSON_STRUCTURE = re.compile(r'[\[\]{},"\\]')


# "utf-8" reads UTF-16 too (see `utf16_encoding`).
Encoding = Literal["utf-8", "cp1252"]


class FileOptions(GenericOptions):
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    encoding: Encoding = "utf-8"
    delimiter: Literal["auto", ",", ";", "\t", "|"] = ","
    # 0 publishes as fast as possible; 60 replays an hour of event time in a minute.
    speed: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=1000, ge=1, le=100_000)


# Formats by file extension (before a `.gz`).
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet"}


def format_of(path: Path) -> str | None:
    """The format the file's extension names, or None.

    >>> format_of(Path("a.CSV")), format_of(Path("a.tsv.gz")), format_of(Path("a.parquet.gz")), format_of(Path("a.gz"))
    ('csv', 'csv', None, None)
    """
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        fmt = FORMATS.get(suffixes[-2]) if len(suffixes) > 1 else None
        return None if fmt == "parquet" else fmt
    return FORMATS.get(suffixes[-1]) if suffixes else None


def file_format(path: Path, declared: str, whole_files: bool = False) -> str:
    """The declared format, or the one of the extension. `.tsv` and `.gz` only for `whole_files`
    (read from the start, as the file source does; a watcher tails plain bytes)."""
    if declared != "auto":
        return declared
    plain = path.suffix.lower() not in (".tsv", ".gz")
    fmt = format_of(path) if whole_files or plain else None
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the extension; set options.format")
    return fmt


class GzipBody(io.RawIOBase):
    """A .gz file's decompressed bytes, ending cleanly where the compressed data is damaged.

    gzip raises at a file cut short (EOFError), corrupt data (zlib.error), a failed check, or bytes
    after the last member that are not gzip: the whole file would be lost, or a reader would crash.
    Here the bytes up to the last line end before the damage are read and `damage` says what was
    lost (the readers make it a dead letter). Bytes after the last line end are held back until
    more arrive, so a line cut by the damage is never read as a whole one (a value short of its
    last digits). A file that is not gzip from its first byte still fails: it is misnamed, not damaged.
    """

    CHUNK = 1 << 16

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._gzip = gzip.GzipFile(path, "rb")
        self._ready = memoryview(b"")
        self._held = b""  # decompressed bytes after the last line end
        self._decompressed = 0
        self._ended = False
        self.damage = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._ready and not self._ended:
            self._fill()
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def close(self) -> None:
        self._gzip.close()
        super().close()

    def _fill(self) -> None:
        try:
            chunk = self._gzip.read1(self.CHUNK)
        except EOFError:
            self._end(False, "the compressed data ends early (the file is cut short)")
            return
        except (zlib.error, gzip.BadGzipFile) as exc:
            if not self._decompressed:
                raise OSError(str(exc)) from None
            if isinstance(exc, zlib.error):
                self._end(False, f"the compressed data is corrupt ({exc})")
            elif str(exc).startswith("Not a gzipped file"):  # what gunzip calls trailing garbage
                self._end(True, "the bytes after the end of the compressed data are not gzip: ignored")
            else:  # a member's check failed after all of its data was read
                self._end(True, f"the compressed data fails its check ({exc}): values read from it may be damaged")
            return
        if not chunk:
            self._end(True, "")
            return
        self._decompressed += len(chunk)
        data = self._held + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self._ready, self._held = memoryview(data[:cut]), data[cut:]

    def _end(self, keep_last_line: bool, damage: str) -> None:
        lost = "" if keep_last_line or not self._held else f"; a line cut short ({len(self._held)} bytes) is dropped"
        self._ready = memoryview(self._held if keep_last_line else b"")
        self._held, self._ended = b"", True
        self.damage = f"{damage}, {self._decompressed} bytes into its text{lost}" if damage else ""


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return io.BufferedReader(GzipBody(path))
    return path.open("rb")


class FileDamage(Exception):
    """A damaged .gz file ended early (see `GzipBody`): one dead letter, after the records read before it."""


def check_damage(handle: IO[Any]) -> None:
    """Raise FileDamage if the handle (from `_open_bytes` or `open_text`) read a damaged .gz file to its end."""
    if damage := damage_of(handle):
        raise FileDamage(damage)


def damage_of(handle: IO[Any]) -> str:
    """What the damaged .gz file read through the handle lost ("" for any other file)."""
    raw = getattr(getattr(handle, "buffer", handle), "raw", None)
    return raw.damage if isinstance(raw, GzipBody) else ""


def utf16_encoding(path: Path) -> str | None:
    """The UTF-16 encoding of the file, or None: by its byte order mark (as Excel's "Unicode text" has),
    else by zero bytes between its first four characters (text in UTF-16 without the mark; UTF-8 text
    holds no zero byte)."""
    try:
        with _open_bytes(path) as handle:
            head = handle.read(8)
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    # Four printable ASCII characters, each with a zero byte after (little endian) or before it (big endian).
    for encoding, zeros, text in (("utf-16-le", head[1::2], head[0::2]), ("utf-16-be", head[0::2], head[1::2])):
        if len(head) == 8 and zeros == bytes(4) and all(32 <= byte < 127 for byte in text):
            return encoding
    return None


def open_text(path: Path, encoding: Encoding = "utf-8") -> IO[str]:
    """The file as text for the CSV reader: gunzipped, UTF-16 when it is (see `utf16_encoding`), else UTF-8 (a byte
    order mark dropped; bytes that are not UTF-8 kept as surrogates, so only their row is rejected)."""
    text_encoding = "cp1252" if encoding == "cp1252" else utf16_encoding(path) or "utf-8-sig"
    return io.TextIOWrapper(_open_bytes(path), encoding=text_encoding, errors="surrogateescape", newline="")


def _lines(path: Path, encoding: Encoding) -> Iterator[bytes]:
    """The file's lines as UTF-8 bytes (a UTF-16 or Windows-1252 file re-encoded; a broken one fails on its line)."""
    if encoding != "utf-8" or utf16_encoding(path):
        with open_text(path, encoding) as text:
            for line in text:
                yield line.encode("utf-8", "surrogateescape")
            check_damage(text)
        return
    with _open_bytes(path) as handle:
        for raw in handle:
            # A bare CR ends a line too (classic Mac line ends): a raw CR is never inside a JSON line.
            yield from raw.splitlines(keepends=True) if b"\r" in raw else (raw,)
        check_damage(handle)


def csv_delimiter(header: str) -> str:
    """The separator a CSV header line uses: the one of CSV_DELIMITERS it holds most of (`,` if none).

    >>> csv_delimiter("timestamp;value;host"), csv_delimiter("timestamp,value"), csv_delimiter("value")
    (';', ',', ',')
    """
    counts = {d: header.count(d) for d in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def before_header(line: str) -> bool:
    """Whether a line before a CSV file's header is not the header: blank, or a comment (`#`), as loggers and
    exports write above it.

    >>> before_header("# exported 2024-01-01"), before_header("\\r\\n"), before_header("timestamp,value")
    (True, True, False)
    """
    return not line.strip() or line.lstrip().startswith("#")


def _from_header(lines: Iterator[str]) -> Iterator[str]:
    """The lines from the header on."""
    for line in lines:
        if not before_header(line):
            yield line
            yield from lines
            return


def header_line(path: Path, encoding: Encoding = "utf-8") -> str:
    """The CSV file's header line ("" when it has none)."""
    with open_text(path, encoding) as handle:
        return next(_from_header(handle), "")


def read_records(
    path: Path, fmt: str, required: list[str], skip: int = 0, delimiter: str = ",", encoding: Encoding = "utf-8"
) -> Iterator[tuple[dict[str, Any] | None, bytes, str]]:
    """(record or None, raw bytes, error) for every record after the first `skip`.

    Each record is judged on its own: what one holds (bytes that are not UTF-8, nesting,
    size, a CSV row with more or fewer fields than the header) makes that record a failure,
    and the records after it are still read.
    """
    try:
        yield from _text_records(path, fmt, required, skip, delimiter, encoding)
    except FileDamage as exc:
        yield None, b"", str(exc)


def _text_records(
    path: Path, fmt: str, required: list[str], skip: int, delimiter: str, encoding: Encoding
) -> Iterator[tuple[dict[str, Any] | None, bytes, str]]:
    if fmt == "jsonl":
        try:
            if _json_array(path, encoding):
                yield from _array_records(path, skip, encoding)
                return
            for index, line in enumerate(_lines(path, encoding)):
                if index < skip:
                    continue
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    yield None, raw, "empty line"
                    continue
                record, error = decode_json_record(raw)
                yield record, raw, f"line {index + 1} {error}" if error else ""
        except (OSError, EOFError, UnicodeDecodeError) as exc:  # e.g. a file named .gz that is not gzip
            raise ConfigError(f"{path}: cannot be read: {exc}") from None
    elif fmt == "csv":
        try:
            yield from _csv_records(path, required, skip, delimiter, encoding)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from None
    else:
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:  # cut short, corrupt, or not Parquet at all
            raise ConfigError(f"{path}: cannot be read as Parquet: {exc}") from None
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)} (columns present: {', '.join(frame.columns)})"
            )
        yield from parquet_records(frame, skip)


def parquet_records(frame: pl.DataFrame, skip: int) -> Iterator[tuple[dict[str, Any], bytes, str]]:
    """(record, raw bytes, "") for each row of a Parquet file after the first `skip`, its values as a text
    file would carry them where an event cannot hold them: a NaN or an infinity as its text, bytes as text
    (those that are not UTF-8 escaped), so one such cell does not cost its row."""
    for row in frame.slice(skip).iter_rows(named=True):
        record = {name: _event_value(value) for name, value in row.items()}
        yield record, raw_json(record), ""


def _event_value(value: Any) -> Any:
    """The value, or its text where an event cannot hold it (see `parquet_records`).

    >>> _event_value({"a": [float("nan"), b"caf\\xc3\\xa9", b"\\xff", 1.5]})
    {'a': ['nan', 'café', '\\\\xff', 1.5]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return safe_text(value)
    if isinstance(value, dict):
        return {name: _event_value(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_event_value(inner) for inner in value]
    return value


def _json_array(path: Path, encoding: Encoding) -> bool:
    """Whether the file is named .json (not JSON lines: .jsonl, .ndjson) and holds an array (its first
    character that is not blank is a `[`; in JSON lines, a first line that is an array is a bad line)."""
    if ".json" not in [suffix.lower() for suffix in path.suffixes[-2:]]:
        return False
    with open_text(path, encoding) as text:
        while chunk := text.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0] == "["
    return False


def _array_records(path: Path, skip: int, encoding: Encoding) -> Iterator[tuple[dict[str, Any] | None, bytes, str]]:
    """(record or None, raw bytes, error) for each element of the file's JSON array after the first `skip`,
    each judged on its own as a JSON line is (size, nesting, an object)."""
    with open_text(path, encoding) as handle:
        text = handle.read(MAX_JSON_ARRAY_BYTES + 1)
        damage = damage_of(handle)
    if len(text) > MAX_JSON_ARRAY_BYTES:
        raise ConfigError(f"{path}: holds a JSON array over {MAX_JSON_ARRAY_BYTES >> 20} MB, read whole: "
                          "write it as JSON lines (one object a line, .jsonl)")
    for index, element in enumerate(array_elements(text)):
        if index < skip:
            continue
        raw = element.encode("utf-8", "surrogateescape")
        if not element.strip():
            yield None, raw, f"array element {index + 1} is empty"
            continue
        record, error = decode_json_record(raw)
        yield record, raw, f"array element {index + 1} {error}" if error else ""
    if damage:
        raise FileDamage(damage)


def array_elements(text: str) -> Iterator[str]:
    """The text of each element of a JSON array, split at its top-level commas without parsing (so an
    element nested too deep or broken is one bad element, not a failed file). Text after the closing
    bracket, or an array never closed, is one more element, which does not read as JSON.

    >>> list(array_elements(' [ {"a": "],["}, [1, {"b": 2}] , 3 ] '))
    [' {"a": "],["}', ' [1, {"b": 2}] ', ' 3 ']
    >>> list(array_elements('[{"a": 1}, {"b": ')), list(array_elements("[]")), list(array_elements('[1] x'))
    (['{"a": 1}', ' {"b": '], [], ['1', '] x'])
    >>> list(array_elements(r'[{"a": "\\\\"}, {"b": "\\"]"}]'))
    ['{"a": "\\\\\\\\"}', ' {"b": "\\\\"]"}']
    """
    opening = text.index("[")
    start, depth, in_string, escaped_at = opening + 1, 1, False, -1
    for match in _JSON_STRUCTURE.finditer(text, start):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:  # the character after a backslash
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                if text[start:at].strip() or start > opening + 1:
                    yield text[start:at]
                if text[at + 1:].strip():
                    yield text[at:]
                return
        elif char == "," and depth == 1:
            yield text[start:at]
            start = at + 1
    if text[start:].strip():
        yield text[start:]


def _csv_records(
    path: Path, required: list[str], skip: int, delimiter: str, encoding: Encoding
) -> Iterator[tuple[dict[str, Any] | None, bytes, str]]:
    # surrogateescape keeps bytes that are not UTF-8 visible to the row check instead of
    # failing the whole file at the first one; utf-8-sig drops a byte order mark.
    if delimiter == "auto":
        delimiter = csv_delimiter(header_line(path, encoding))
    with open_text(path, encoding) as handle:
        # strict: a quote never closed is an error at the end of the file, not a last field holding the rest of it.
        reader = csv.DictReader(_from_header(handle), delimiter=delimiter, strict=True)
        try:
            written = [name.strip() for name in reader.fieldnames or []]
            header = column_names(written)
        except csv.Error as exc:
            raise ConfigError(f"{path}: the header line is not CSV ({exc})") from None
        reader.fieldnames = header
        try:
            ",".join(header).encode("utf-8")
        except UnicodeEncodeError:
            # Every event would carry the broken names: the file, not a row, is at fault.
            raise ConfigError(f"{path}: the header line is not UTF-8 or UTF-16 text "
                              f"({safe_text(','.join(header), 200)})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)} (columns present: {', '.join(header)})"
            )
        index = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                check_damage(handle)
                return
            except csv.Error as exc:  # e.g. a field over the csv module's size limit
                if index >= skip:
                    unclosed = " (a quote opened in it is never closed: the rest of the file is in it)"
                    yield None, b"", f"CSV row {index + 1}: {exc}{unclosed if 'end of data' in str(exc) else ''}"
                index += 1
                continue
            index += 1
            if index <= skip:
                continue
            # DictReader files extra fields under None and fills missing ones with None.
            extra = row.pop(None, None)  # type: ignore[call-overload]
            if extra is not None or None in row.values():
                fields = len(header) + len(extra or []) - sum(v is None for v in row.values())
                values = [v for v in row.values() if v is not None] + list(extra or [])
                comment = bool(values) and values[0].lstrip().startswith("#")
                shape = "is a comment line" if comment else f"has {fields} fields, the header {len(header)}"
                yield None, _csv_line(values), f"CSV row {index} {shape}"
                continue
            # Blanks around a value are the writer's layout ("t, 1.5"): " 1.5" would not read as a number.
            row = {name: value.strip() for name, value in row.items()}
            if list(row.values()) == written:  # files joined end to end, each with its header
                yield None, _csv_line(written), f"CSV row {index} repeats the header line"
                continue
            text = ",".join(f"{v}" for v in row.values())
            raw = text.encode("utf-8", "surrogateescape")
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    yield None, raw, f"CSV row {index} is not UTF-8 (byte {exc.start})"
                    continue
            if len(raw) > MAX_RECORD_BYTES:
                yield None, raw[:MAX_DEAD_LETTER_RAW], f"CSV row {index} is oversize: {len(raw)} bytes > {MAX_RECORD_BYTES}"
                continue
            yield dict(row), _csv_line(list(row.values())), ""


def column_names(header: list[str]) -> list[str]:
    """The header's names, each its own: an empty one is named by its position, a repeated one numbered
    (a dict keeps one value per name: the second `value` column would silently replace the first).

    >>> column_names(["timestamp", " value", "value ", "", "value_2"])
    ['timestamp', 'value', 'value_3', 'column_4', 'value_2']
    """
    names: list[str] = []
    taken = {name.strip() for name in header}
    for position, name in enumerate((name.strip() for name in header), start=1):
        if not name:
            name = f"column_{position}"
        if name in names:
            n = 2
            while f"{name}_{n}" in taken or f"{name}_{n}" in names:
                n += 1
            name = f"{name}_{n}"
        names.append(name)
    return names


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().rstrip("\r\n").encode("utf-8", "surrogateescape")


class FilePosition:
    """How many records of each file have been published, kept on disk.

    A position file that does not hold counts stops the source with the file named (taking it as
    empty would publish the file again); one that cannot be saved stops it too (`StateNotSaved`).
    """

    def __init__(self, path: Path) -> None:
        self.state = JsonState(path)
        self.done: dict[str, int] = self.state.load()
        if not all(type(count) is int and count >= 0 for count in self.done.values()):
            raise self.state.broken("expected {file: count of records published}")

    def get(self, file: Path) -> int:
        return self.done.get(str(file.resolve()), 0)

    def set(self, file: Path, count: int) -> None:
        self.done[str(file.resolve())] = count
        self.state.save(self.done)


@register_adapter
class FileAdapter(RecordAdapter):
    """Replays one file (`endpoint`) into the bus.

    >>> FileAdapter.options_model.model_validate({"speed": 0, "format": "csv"}).speed
    0.0
    """

    type_name: ClassVar[str] = "file"
    options_model: ClassVar[type[FileOptions]] = FileOptions  # type: ignore[assignment]
    options: FileOptions

    @classmethod
    def check_source(cls, source: SourceConfig, options: BaseModel, where: str) -> None:
        """A file source names its file; an empty endpoint would silently read '.'."""
        if not source.endpoint.strip():
            raise ConfigError(f"{where}.endpoint: expected the path of a CSV, JSONL or Parquet file (got '')")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = FilePosition(self.state_dir / f"{self.source.name}.position.json")

    @property
    def path(self) -> Path:
        return Path(self.source.endpoint)

    async def run(self, publisher: Publisher, stop: asyncio.Event | None = None) -> AdapterStats:
        path = self.path
        if not path.exists():
            raise ConfigError(f"source {self.source.name}: file {path} does not exist")
        fmt = file_format(path, self.options.format, whole_files=True)
        done = self.position.get(path)
        self.stats.skipped = done
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        pending = 0
        first_event: float | None = None
        started = time.monotonic()
        # `required` names fields after renaming; the file has them under their original names.
        original = {new: old for old, new in self.options.rename.items()}
        required = [original.get(name, name) for name in self.options.required]
        for record, raw, error in read_records(path, fmt, required, skip=done, delimiter=self.options.delimiter,
                                                  encoding=self.options.encoding):
            if stop is not None and stop.is_set():
                break
            pending += 1
            if record is None:
                failures.append((error, raw))
                event = None
            else:
                event = self.judge(record, raw, batch, failures)
            if event is not None and self.options.speed > 0:
                at = event.timestamp.timestamp()
                first_event = at if first_event is None else first_event
                # Event time runs `speed` times faster than wall time.
                delay = started + (at - first_event) / self.options.speed - time.monotonic()
                if delay > 0:
                    # The current record is counted but waits for its time in the next batch.
                    batch.pop()
                    done = await self._flush(publisher, path, batch, failures, pending - 1, done)
                    batch, failures, pending = [event], [], 1
                    await asyncio.sleep(delay)
            if pending >= self.options.batch_size:
                done = await self._flush(publisher, path, batch, failures, pending, done)
                batch, failures, pending = [], [], 0
        await self._flush(publisher, path, batch, failures, pending, done)
        return self.stats

    async def _flush(
        self,
        publisher: Publisher,
        path: Path,
        batch: list[StandardEvent],
        failures: list[tuple[str, bytes]],
        count: int,
        done: int,
    ) -> int:
        """Publish, then record the position: a crash in between republishes, never skips."""
        if not count:
            return done
        await self.publish(publisher, batch, failures)
        self.position.set(path, done + count)
        return done + count
