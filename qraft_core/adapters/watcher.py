"""Directory watching: new files and appended lines matching a glob (CSV, JSONL, Parquet).

For each file the consumed byte offset (CSV, JSONL) or row count (Parquet, UTF-16)
is kept in a state file, so nothing is published twice after a restart.
A line is consumed only once its line end has been written, and a Parquet
file only once it can be read, so files still being written are safe. A file
unchanged for `settle_s` is complete: its last line is read without a line end
(a line longer than a read chunk is a dead letter then), and a Parquet file that still cannot be read is a dead letter. A file whose
first bytes, or the bytes read last before its offset, changed was copied over or
rewritten: it is read again from its start. A file
that cannot be opened (permission denied, I/O error) is reported once and
tried again at every scan; the other files are read. With `encoding: cp1252`
every line (a CSV header too) is Windows-1252, as Excel's plain "CSV" is. A
UTF-16 file (Excel's "Unicode text") is read whole once complete, as the file
source reads it (its separator, Excel's tab included, taken from its header), and again from the
record it stopped at when it grows. A line ends at LF, CRLF or a lone CR (classic Mac line ends, as the
file source reads them); a UTF-8 byte order mark before the first line is dropped. CSV is read by rows, not
lines: a quoted field may hold line ends. A file renamed in its folder (a log rotated to `app.jsonl.1`) is
followed by its inode and read to its end; one that went away unread is reported with the bytes missed.
Positions of files gone are dropped, and the state is written once a scan and after each full batch.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from qraft_core.adapters.base import AdapterStats, register_adapter
from qraft_core.adapters.file import (
    Encoding,
    before_header,
    column_names,
    file_format,
    parquet_records,
    read_records,
    utf16_encoding,
)
from qraft_core.adapters.live import JsonState, LiveAdapter, LiveOptions, sleep_or_stop
from qraft_core.adapters.parsers import decode_json_record
from qraft_core.bus.base import Publisher
from qraft_core.config import ConfigError
from qraft_core.events import MAX_DEAD_LETTER_RAW, MAX_RECORD_BYTES, StandardEvent

log = logging.getLogger(__name__)

# How much of a growing file is read per step, so a huge append does not fill memory.
READ_CHUNK_BYTES = 8 * 1024 * 1024
# The first bytes of a file, kept as a digest: when they change, the file was replaced in place.
HEAD_BYTES = 4096
# A line end: LF, CRLF, or a lone CR. A CR as the last byte read may be the first half of a CRLF: not an end yet.
LINE_END = re.compile(rb"\r\n|\r(?=[^\n])|\n")


class WatcherOptions(LiveOptions):
    # Which files of the folder (`endpoint`) to read; `**/` descends into subfolders.
    pattern: str = "*.jsonl"
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    encoding: Encoding = "utf-8"
    interval_s: float = Field(default=1.0, gt=0)
    # A file not modified for this long is complete (its last line needs no newline).
    settle_s: float = Field(default=60.0, gt=0)


def _head(path: Path, length: int) -> str:
    return _digest(path, 0, min(length, HEAD_BYTES))


def _digest(path: Path, start: int, end: int) -> str:
    """The hash of the file's bytes [start, end)."""
    with path.open("rb") as handle:
        handle.seek(start)
        return hashlib.sha256(handle.read(end - start)).hexdigest()


def _same_inode(stat: os.stat_result, position: dict[str, Any]) -> bool:
    """Whether `stat` is of the file `position` was read from (a state saved before devices were kept matches any)."""
    return stat.st_ino == position["inode"] and stat.st_dev == position.get("device", stat.st_dev)


def _tail_start(offset: int) -> int:
    """Where the bytes read last before `offset` that a resume checks begin."""
    return max(0, offset - HEAD_BYTES)


def _utf8(raw: bytes, encoding: Encoding) -> bytes:
    """The line as UTF-8. A Windows-1252 byte that encodes nothing (0x81, 0x8D, 0x8F, 0x90, 0x9D) is
    kept as it is, so its line is rejected as not UTF-8, as the file source rejects it.

    >>> _utf8("Café;Zürich".encode("cp1252"), "cp1252").decode()
    'Café;Zürich'
    """
    if encoding == "utf-8" or raw.isascii():
        return raw
    return raw.decode(encoding, "surrogateescape").encode("utf-8", "surrogateescape")


def _complete(data: bytes) -> bytes:
    """The lines of `data` whose line end is written (see LINE_END).

    >>> _complete(b"a\\r\\nb\\rc\\r"), _complete(b"a\\nb")
    (b'a\\r\\nb\\r', b'a\\n')
    """
    return data[: max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1]


def _line_end(path: Path, offset: int) -> int | None:
    """The offset just after the line end (see LINE_END) of the line at `offset`, or None if not written yet."""
    with path.open("rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(READ_CHUNK_BYTES):
            if found := LINE_END.search(chunk):
                return offset + found.end()
            offset += len(chunk)
            if chunk.endswith(b"\r") and (following := handle.read(1)):  # a CR at the chunk's end
                return offset + (following == b"\n")
    return None


# A quoted CSV field holding more line breaks than this is taken for a stray quote (see `_text`).
MAX_QUOTED_LINES = 1000


def _csv_units(data: bytes, encoding: Encoding, after_header: bool) -> Iterator[tuple[bytes, list[str], str]]:
    """(bytes, values, csv problem) of each CSV row in `data`, a line end inside a quoted field being part of
    its row. Before the header, each blank or comment line is a unit of its own (a quote in a comment opens
    nothing). A last row whose quote is still open at the end of `data` is not yielded: it waits for more.

    >>> [unit for unit, _, _ in _csv_units(b'# a "note\\nid,v\\n1,"x\\r\\ny"\\n2,"open\\n', "utf-8", False)]
    [b'# a "note\\n', b'id,v\\n', b'1,"x\\r\\ny"\\n']
    """
    lines = data.splitlines(keepends=True)
    taken = 0
    if not after_header:
        while taken < len(lines) and before_header(lines[taken].decode("utf-8", "replace")):
            yield lines[taken], [], ""
            taken += 1
    pulled, exhausted = taken, False

    def feed() -> Iterator[str]:
        nonlocal pulled, exhausted
        for line in lines[taken:]:
            pulled += 1
            yield _utf8(line, encoding).decode("utf-8", "surrogateescape")
        exhausted = True

    reader = csv.reader(feed())
    while True:
        try:
            values, problem = next(reader), ""
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's size limit: the rest of its line is dropped
            values, problem = [], str(exc)
        if exhausted:  # the reader asked for a line after the last one: the row's quote is still open
            return
        yield b"".join(lines[taken:pulled]), values, problem
        taken = pulled


@register_adapter
class WatcherAdapter(LiveAdapter):
    """Watches the folder `endpoint` for files matching `options.pattern`.

    >>> WatcherAdapter.options_model.model_validate({"pattern": "*.csv"}).format
    'auto'
    """

    type_name: ClassVar[str] = "watcher"
    endpoint_expected: ClassVar[str] = "the folder to watch"
    options_model: ClassVar[type[WatcherOptions]] = WatcherOptions  # type: ignore[assignment]
    options: WatcherOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = JsonState(self.state_dir / f"{self.source.name}.watch.json")
        self.files: dict[str, dict[str, Any]] = self.state.load().get("files", {})
        fields = {"inode", "size", "offset", "rows", "header"}
        if not isinstance(self.files, dict) or not all(
            isinstance(position, dict) and fields <= position.keys() for position in self.files.values()
        ):
            raise self.state.broken(f"'files' is not an object of file positions ({', '.join(sorted(fields))})")
        # Files reported as unreadable (format, permissions), so each is reported once until it reads.
        self._unreadable: set[str] = set()
        self._unsaved = False  # positions changed since the state file was written

    @property
    def folder(self) -> Path:
        return Path(self.endpoint)

    async def run(self, publisher: Publisher, stop: asyncio.Event) -> AdapterStats:
        if not self.folder.is_dir():
            raise ConfigError(f"source {self.source.name}: endpoint {self.folder} is not a folder")
        while not stop.is_set():
            await self.scan(publisher)
            if await sleep_or_stop(stop, self.options.interval_s):
                break
        return self.stats

    async def scan(self, publisher: Publisher) -> int:
        """Publish whatever is new in the folder; returns the number of records read."""
        if not self.folder.is_dir():  # removed or unmounted while watched
            self._report_once(self.folder, "list", f"{self.folder} is not a folder any more; trying again")
            return 0
        try:
            paths = sorted(p for p in self.folder.glob(self.options.pattern) if p.is_file())
        except OSError as exc:
            self._report_once(self.folder, "list", f"{self.folder} cannot be listed ({exc.strerror or exc})")
            return 0
        self._unreadable.discard(str(self.folder))
        listed = {str(path.resolve()) for path in paths}
        self._follow_renames(listed)
        # A file renamed away from the pattern (a rotated log) is read to its end first, named as it was.
        rotated = [(Path(key), Path(position["rotated_from"])) for key, position in self.files.items()
                   if "rotated_from" in position and key not in listed]
        read = 0
        try:
            for path, named in rotated + [(path, path) for path in paths]:
                read += await self._read(publisher, path, named)
        finally:
            self._store()  # once a scan (and after each full batch), so many files cost linear time
        return read

    async def _read(self, publisher: Publisher, path: Path, named: Path) -> int:
        """Read what is new in `path` (its format told by the name `named`); returns the number of records read."""
        try:
            fmt = file_format(named, self.options.format)
        except ConfigError as exc:
            self._report_once(path, "format", str(exc))
            return 0
        try:
            if fmt == "parquet":
                read = await self._parquet(publisher, path)
            elif self.files.get(str(path.resolve()), {}).get("offset", 0) == 0 and utf16_encoding(path):
                read = await self._utf16(publisher, path, fmt)
            else:
                read = await self._text(publisher, path, fmt)
            key = str(path.resolve())
            if path != named and self._settled(path) and self.files[key]["size"] >= path.stat().st_size:
                del self.files[key]  # a rotated file read to its end and unchanged since: nothing more comes
        except FileNotFoundError:
            return 0  # removed between the listing and the read
        except OSError as exc:
            self._report_once(path, "read", f"{path} cannot be read ({exc.strerror or exc}); "
                              "trying again at every scan")
            return 0
        except ConfigError as exc:  # `utf16_encoding` could not read the file's first bytes
            if path.exists():  # else removed between the listing and the read
                self._report_once(path, "read", f"{exc}; trying again at every scan")
            return 0
        self._unreadable.discard(str(path))
        return read

    def _follow_renames(self, listed: set[str]) -> None:
        """Move each position whose file is not at its path any more to the file's new name in the same folder
        (a log rotated by renaming it, `app.jsonl` to `app.jsonl.1`), so its last lines are read; drop the others,
        saying so when bytes of them were left unread."""
        gone: dict[str, tuple[dict[str, Any], bool]] = {}
        for key, position in self.files.items():
            try:
                stat = os.stat(key)
            except (FileNotFoundError, NotADirectoryError):
                gone[key] = position, False
                continue
            except OSError:
                continue  # cannot tell: kept
            if not _same_inode(stat, position):
                gone[key] = position, True
        folders: dict[Path, dict[int, list[Path]]] = {}
        for key in gone:
            del self.files[key]
            self._unsaved = True
        for key, (position, replaced) in gone.items():
            moved = self._renamed(Path(key).parent, position, folders)
            if moved is not None:
                if str(moved) in listed:
                    position.pop("rotated_from", None)
                else:  # read at every scan until complete, though the pattern does not match its new name
                    position.setdefault("rotated_from", key)
                self.files.setdefault(str(moved), position)  # a second link to a file read already is not moved
                continue
            unread = max(0, position.get("seen", 0) - position["size"])
            if replaced and unread == 0:
                # Read to its end at the last scan: an export rewritten and renamed over (the safe way to
                # write one) is nothing to count; lines added to it since the last scan cannot be known.
                log.warning("source %s: %s was replaced after it was read to its end; reading the new file "
                            "from its start", self.source.name, key)
            elif replaced:
                self.error("rotation", "%s was replaced, and the file it was is not in its folder any more (moved "
                           "elsewhere, compressed or deleted): its bytes from byte %d on were not read (%d seen at "
                           "the last scan, and any written since)", key, position["size"], unread)
            elif unread > 0:
                self.error("rotation", "%s was removed before it was read to its end: its %d bytes from byte %d "
                           "on were not read", key, unread, position["size"])

    def _renamed(self, folder: Path, position: dict[str, Any], folders: dict[Path, dict[int, list[Path]]]) -> Path | None:
        """The file of `position` under another name in `folder`, or None."""
        if folder not in folders:
            by_inode: dict[int, list[Path]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False):
                            by_inode.setdefault(entry.inode(), []).append(Path(entry.path))
            except OSError:
                pass  # the folder went away too
            folders[folder] = by_inode
        for path in folders[folder].get(position["inode"], []):
            try:
                stat = path.stat()
                if _same_inode(stat, position) and self._unchanged(path, stat, position):
                    return path
            except OSError:
                continue
        return None

    def _report_once(self, path: Path, kind: str, message: str) -> None:
        if str(path) not in self._unreadable:
            self._unreadable.add(str(path))
            self.error(kind, "%s", message)

    def _settled(self, path: Path) -> bool:
        return time.time() - path.stat().st_mtime >= self.options.settle_s

    @staticmethod
    def _unchanged(path: Path, stat: os.stat_result, position: dict[str, Any]) -> bool:
        """Whether the file of `position`, at `path`, still holds the bytes read from it."""
        # A file rewritten in place keeps its inode and may keep its first bytes (a regenerated
        # export starts with the same header and rows): the bytes just before the offset must still
        # be those read, or reading on from there would skip rows and read from the middle of one.
        changed = position.get("head") and stat.st_mtime_ns != position.get("mtime")
        return not (
            position["size"] > stat.st_size
            or (changed and _head(path, position["size"]) != position["head"])
            or (changed and position.get("tail")
                and _digest(path, _tail_start(position["offset"]), position["offset"]) != position["tail"])
        )

    def _position(self, path: Path) -> dict[str, Any]:
        """The saved position of `path`, reset when the file was replaced or truncated."""
        stat = path.stat()
        key = str(path.resolve())
        position = self.files.get(key)
        if position is not None and not (_same_inode(stat, position) and self._unchanged(path, stat, position)):
            log.warning("source %s: %s was replaced or truncated; reading it from the start",
                        self.source.name, path, extra=self.log_fields)
            position = None
        if position is None:
            position = {"inode": stat.st_ino, "size": 0, "offset": 0, "rows": 0, "header": None}
            self.files[key] = position
        position.update(device=stat.st_dev, mtime=stat.st_mtime_ns, seen=stat.st_size)
        return position

    def _save(self, path: Path, position: dict[str, Any], **changes: Any) -> None:
        """Keep what was read of `path`; the state file is written by `_store`."""
        position.update(changes)
        if position["size"] and (not position.get("head") or position.get("head_size", 0) < HEAD_BYTES):
            position["head"], position["head_size"] = _head(path, position["size"]), min(position["size"], HEAD_BYTES)
        if position["offset"]:
            position["tail"] = _digest(path, _tail_start(position["offset"]), position["offset"])
        self.files[str(path.resolve())] = position
        self._unsaved = True

    def _store(self) -> None:
        if self._unsaved:
            self.state.save({"files": self.files})
            self._unsaved = False

    async def _text(self, publisher: Publisher, path: Path, fmt: str) -> int:
        position = self._position(path)
        read = 0
        while True:
            with path.open("rb") as handle:
                handle.seek(position["offset"])
                chunk = handle.read(READ_CHUNK_BYTES)
            # An unfinished last line waits for its line end, until the file is complete: then it is the last line.
            final = bool(chunk) and len(chunk) < READ_CHUNK_BYTES and self._settled(path)
            data = chunk if final else _complete(chunk)
            if not data:
                if len(chunk) < READ_CHUNK_BYTES:
                    return read
                # One line longer than a whole chunk: a dead letter, then read on after it. Without a line end
                # it may still be being written, until the file is complete: then it runs to the file's end.
                end = _line_end(path, position["offset"])
                if end is None:
                    if not self._settled(path):
                        return read
                    end = path.stat().st_size
                await self._oversize(publisher, path, position, end, chunk,
                                     f"line is oversize: {end - position['offset']} bytes, "
                                     f"more than the {READ_CHUNK_BYTES} read at once")
                read += 1
                continue
            header = position["header"]
            start = position["offset"]
            batch: list[StandardEvent] = []
            failures: list[tuple[str, bytes]] = []
            # Excel's "CSV UTF-8" starts with a byte order mark: it is no part of the first line (the header).
            consumed = len(codecs.BOM_UTF8) if start == 0 and data.startswith(codecs.BOM_UTF8) else 0
            body = data[consumed:]
            units = (_csv_units(body, self.options.encoding, header is not None) if fmt == "csv"
                     else ((line, [], "") for line in body.splitlines(keepends=True)))
            for unit, values, problem in units:
                consumed += len(unit)
                raw = _utf8(unit.rstrip(b"\r\n"), self.options.encoding)
                if fmt == "csv" and header is None:
                    text = raw.decode("utf-8", "replace")
                    if not before_header(text):
                        header = column_names(next(csv.reader([text]), []))
                    continue
                read += 1
                record, error = self._csv_record(raw, values, problem, header) if fmt == "csv" else self._json(raw)
                if record is None:
                    failures.append((error, raw))
                else:
                    self.judge(record, raw, batch, failures)
                if len(batch) + len(failures) >= self.options.batch_size:
                    await self.publish(publisher, batch, failures)
                    batch, failures = [], []
                    self._save(path, position, offset=start + consumed, size=start + consumed, header=header)
                    self._store()
            await self.publish(publisher, batch, failures)
            if consumed:  # else only a CSV row still waiting for its closing quote: nothing changed
                self._save(path, position, offset=start + consumed, size=start + consumed, header=header)
            if consumed < len(data):  # a CSV row whose quote is still open waits for the rest of it ...
                pending = data[consumed:]
                if final:  # ... unless the file is complete
                    reason = "CSV row is not CSV: a quote opened in it is never closed"
                elif len(chunk) >= READ_CHUNK_BYTES or pending.count(b"\n") > MAX_QUOTED_LINES:
                    reason = (f"CSV row is not CSV: a quote opened in it is not closed within {MAX_QUOTED_LINES} "
                              f"lines or the {READ_CHUNK_BYTES} bytes read at once")
                elif consumed:
                    continue  # read again from the row's start
                else:
                    return read
                # A stray quote, most likely: only the row's first line is the dead letter, and the rows after
                # it are read as rows (a whole run of good rows is not lost to it).
                first = pending.splitlines(keepends=True)[0]
                await self._oversize(publisher, path, position, start + consumed + len(first),
                                     first.rstrip(b"\r\n"), reason)
                read += 1

    async def _oversize(
        self, publisher: Publisher, path: Path, position: dict[str, Any], end: int, raw: bytes, reason: str
    ) -> None:
        """The bytes from the position to `end` are one dead letter; reading goes on after them."""
        log.warning("source %s: %s: a line at byte %d is a dead letter: %s", self.source.name, path,
                    position["offset"], reason, extra=self.log_fields)
        await self.publish(publisher, [], [(reason, raw[:MAX_DEAD_LETTER_RAW])])
        self._save(path, position, offset=end, size=end)

    @staticmethod
    def _json(raw: bytes) -> tuple[dict[str, Any] | None, str]:
        if not raw.strip():
            return None, "empty line"
        record, error = decode_json_record(raw)
        return record, f"line {error}" if error else ""

    @staticmethod
    def _csv_record(
        raw: bytes, values: list[str], problem: str, header: list[str] | None
    ) -> tuple[dict[str, Any] | None, str]:
        """The row `_csv_units` read as `values` (or failed to read: `problem`), judged against the header."""
        if not raw.strip():
            return None, "empty line"
        if len(raw) > MAX_RECORD_BYTES:
            return None, f"CSV row is oversize: {len(raw)} bytes > {MAX_RECORD_BYTES}"
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"CSV row is not UTF-8: {exc.reason} at byte {exc.start}"
        if problem:
            return None, f"CSV row is not CSV: {problem}"
        values = [value.strip() for value in values]
        names = header or []
        if len(values) != len(names):
            if values and values[0].startswith("#"):
                return None, "CSV row is a comment line"
            return None, f"CSV row has {len(values)} values for {len(names)} columns"
        if values == names:  # a file appended to the watched one with its header
            return None, "CSV row repeats the header line"
        if len(names) == 1 and (separator := next((s for s in (";", "\t", "|") if s in names[0]), None)):
            # Every row would lack the time field, which says nothing of the cause.
            return None, (f"CSV header {names[0][:80]!r} is one column: the watcher reads comma-separated "
                          f"CSV only, this file looks {separator!r}-separated (the file source reads it)")
        return dict(zip(names, values, strict=True)), ""

    async def _parquet(self, publisher: Publisher, path: Path) -> int:
        position = self._position(path)
        size = path.stat().st_size
        if size == position["size"]:
            return 0
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - a file being written is not readable yet
            if not self._settled(path):
                log.debug("source %s: %s not readable yet (%s)", self.source.name, path, exc)
                return 0
            reason = f"{path.name} is not a readable Parquet file: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            return await self._unreadable_file(publisher, path, position, size, reason)
        if frame.height < position["rows"]:
            position["rows"] = 0
        return await self._records(publisher, path, position, size, parquet_records(frame, position["rows"]))

    async def _utf16(self, publisher: Publisher, path: Path, fmt: str) -> int:
        """A UTF-16 file (two bytes a character: its lines cannot be cut at a newline byte) is read whole,
        as the file source reads it, once complete; when it grows, again from the record it stopped at."""
        position = self._position(path)
        size = path.stat().st_size
        if size == position["size"] or not self._settled(path):
            return 0
        try:
            # The default encoding ("utf-8") is the one that reads UTF-16, whatever `encoding` says. The separator
            # is the header's: Excel's "Unicode text" is tab-separated.
            records = read_records(path, fmt, [], skip=position["rows"], delimiter="auto")
            return await self._records(publisher, path, position, size, records)
        except ConfigError as exc:  # a broken header or encoding
            return await self._unreadable_file(publisher, path, position, size, str(exc))

    async def _unreadable_file(
        self, publisher: Publisher, path: Path, position: dict[str, Any], size: int, reason: str
    ) -> int:
        """Complete and still unreadable: said once, and read again only when it changes."""
        await self.publish(publisher, [], [(reason[:1000], b"")])
        self._save(path, position, size=size)
        return 1

    async def _records(
        self, publisher: Publisher, path: Path, position: dict[str, Any], size: int,
        records: Iterable[tuple[dict[str, Any] | None, bytes, str]],
    ) -> int:
        """Publish the (record or None, raw, error) of a file read whole, its count of rows saved after each batch."""
        read = 0
        batch: list[StandardEvent] = []
        failures: list[tuple[str, bytes]] = []
        for record, raw, error in records:
            read += 1
            if record is None:
                failures.append((error, raw))
            else:
                self.judge(record, raw, batch, failures)
            if len(batch) + len(failures) >= self.options.batch_size:
                await self.publish(publisher, batch, failures)
                self._save(path, position, rows=position["rows"] + len(batch) + len(failures))
                self._store()
                batch, failures = [], []
        await self.publish(publisher, batch, failures)
        self._save(path, position, rows=position["rows"] + len(batch) + len(failures), size=size)
        return read
