"""`qraft analyze`: settings for a user's own files, inferred from the data.

For each file: the time column (named, or the first column whose values all
read as times: ISO 8601 text, epoch numbers in s/ms/us/ns when the column is
named like a time or its numbers rise like one, spreadsheet serial dates, or whole numbers written as dates
(20150101, 20150101093000, a year) in a column named like a time), the sampling interval (median
step between distinct times; irregular sampling and gaps are reported), the
numeric columns (95% of the present values numbers, of any sign; true/false read as 1/0) and categorical
columns (few distinct text values, or status codes); row numbers, ids and columns of one value are kept in
the payload only (see `identifier_reason`). From those: each file is a source and a
stream named after its stem, with bars one "round" size at or above its
sampling interval, windows holding several bars, a partition range covering
the data, and the default detector set. The result is a configuration folder
the user can read, edit and run with `qraft --config-dir DIR up`.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from importlib.resources import files
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from qraft_core.adapters.file import (
    FORMATS,
    Encoding,
    csv_delimiter,
    format_of,
    header_line,
    read_records,
)
from qraft_core.adapters.parsers import (
    THOUSANDS_SEPARATORS,
    ParseError,
    decimal_comma_number,
    flattened,
    grouped_number,
    parse_time,
    parse_time_format,
    unit_number,
)
from qraft_core.config import CleanConfig, ConfigError
from qraft_core.events import safe_text
from qraft_core.lander import STORE_TIME_RANGE
from qraft_core.operators.aggregate import DEFAULT_STATS, LARGEST_VALUE
from qraft_core.operators.pipeline import MAX_BAR_SECONDS
from qraft_core.streams import StreamId
from qraft_core.timeutil import names_zone

# Column names read as time without looking further (lower case).
TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts", "event_time", "created_at", "time_ms", "epoch")
TIME_HINTS = ("time", "date", "epoch")
# Names that say time without those words: "when", "created_at", "sent_ts".
TIME_WORDS = ("when", "at", "ts")
# Units of times written as numbers (epoch units, spreadsheet serial dates).
EPOCH_UNITS = ("s", "ms", "us", "ns", "excel")
# Bar sizes a person reads at a glance; each divides the next window sizes.
BAR_SIZES = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# How far the sampling interval may exceed a bar size and still take it: a collector's timestamps run a few
# ms late, spreadsheet serial dates are rounded (3600.03 s); a bar twice as long would halve the resolution.
BAR_TOLERANCE = 0.01
# Window lengths a partition schedule can have (divisors of an hour, whole hours dividing a day).
WINDOW_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)
# A window holds at least this many bars, so one run has something to detect on.
BARS_PER_WINDOW = 12
# Every window costs each asset a store round trip and Dagster a materialization record, whatever
# it holds; findings do not depend on the window length, so a file is cut into few long windows.
TARGET_WINDOWS = 100
# Events one run reads at most (all files together): what bounds a run's memory. The store splits
# its writes by partition, so a run's time span is not bounded.
MAX_EVENTS_PER_RUN = 1_000_000
MAX_PARTITIONS = 30_000
SAMPLE = 200
# Spreadsheet serial dates (days since 1899-12-30) read as such: 1950-01-01 .. 2100-01-01.
EXCEL_DATES = (18_264, 73_051)
# A step longer than this many sampling intervals (and a day) splits a file into stretches planned apart.
LONG_GAP_STEPS = 1000
# A Dagster run costs about what this many windows cost (a 30-year daily file: 122 runs took 421 s, 1 run
# of its 10,958 windows 169 s). A file whose rows lie further apart than that on average (so many windows
# of a day, the longest, per row) is also split at every step this long: another run costs less than them.
RUN_COST_DAYS = 100
# Rows whose time does not parse become dead letters; beyond this share the column is not a time.
MIN_TIME_SHARE = 0.95
# A column is numeric when this share of its present values are numbers ("N/A" and the like are
# left out of the bar statistics, not the event).
MIN_NUMBER_SHARE = 0.95
# With no column numeric or categorical, a column of this share of numbers (the rest text) is numeric.
MIN_MIXED_NUMBER_SHARE = 0.5
# A text column is categorical when it has at most this many distinct values (and repeats them).
MAX_CATEGORIES = 50
EVENT_TYPE = "record"
CONTEXT_BARS = 6
DEFAULT_DETECTORS = files("qraft_core.detectors") / "defaults.yaml"
# Cell texts that mean "no value" (compared in lower case).
MISSING = frozenset({"", "null", "none", "na", "n/a", "nan", "-"})


class AnalyzeError(ConfigError):
    """A file cannot be analysed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FileProfile:
    path: Path
    source: str
    format: str
    rows: int
    time_field: str
    time_unit: str
    first: datetime
    last: datetime
    interval_s: float
    irregular: bool
    gaps: int
    numeric: list[str]
    categorical: list[str]
    ignored: list[str] = field(default_factory=list)
    delimiter: str = ""
    # Records the file source dead-letters (see `Table`).
    malformed: int = 0
    # Numeric columns written with a thousands separator: {column: separator}.
    thousands: dict[str, str] = field(default_factory=dict)
    # JSON records hold nested objects, read as dotted fields (`flatten` of the file source).
    flatten: bool = False
    # (first, last) of each stretch of data between the file's long gaps (see `stretches`); empty: one.
    stretches: list[tuple[datetime, datetime]] = field(default_factory=list)
    # Numeric columns holding values beyond LARGEST_VALUE in size, left out of the bar statistics: {column: count}.
    oversize: dict[str, int] = field(default_factory=dict)
    # Numeric columns written with a decimal comma ("1,5"), as files separated by ";" often are.
    decimal_comma: list[str] = field(default_factory=list)
    # The column holding the time of day when `time_field` holds only the date.
    time_of_day_field: str = ""
    encoding: str = "utf-8"
    # Numeric columns holding some text too, left out of the bar statistics: {column: count of text values}.
    texts: dict[str, int] = field(default_factory=dict)
    # The times are written without a zone or offset (read as UTC).
    zoneless: bool = False
    # The time format with day and month the other way round when it reads the times too (no day above
    # 12 tells them apart): the one chosen is a judgement the user must be able to overturn.
    swapped_format: str = ""
    # Why the first of the `malformed` records is one.
    first_malformed: str = ""
    # Numeric columns written with a unit after the number ("12%", "250 ms"): {column: unit}.
    units: dict[str, str] = field(default_factory=dict)
    # How many times the file was named among the files to analyse (it is read once).
    given: int = 1
    # Columns kept in the payload only for what they are (a row number, one value throughout): {column: why}.
    set_aside: dict[str, str] = field(default_factory=dict)
    # What else was inferred and why (the choice of the time column, rows sharing one time), said with the plan.
    notes: list[str] = field(default_factory=list)
    # Columns of true/false values, read as 1/0 (a flip is a level shift of their mean).
    booleans: list[str] = field(default_factory=list)
    # The text column naming the series each row belongs to (a long-format file: timestamp,host,value), whose
    # values split the file into streams `<source>:<value>` (the pipeline's `stream_key`); "": one stream.
    stream_key: str = ""
    # The values of `stream_key`, most rows first.
    series: list[str] = field(default_factory=list)

    @property
    def bar_seconds(self) -> int:
        return bar_size(self.interval_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path), "source": self.source, "rows": self.rows, "time_field": self.time_field,
            "time_unit": self.time_unit, "first": self.first.isoformat(), "last": self.last.isoformat(),
            "interval_s": self.interval_s, "irregular": self.irregular, "gaps": self.gaps,
            "bar_seconds": self.bar_seconds, "numeric": self.numeric, "categorical": self.categorical,
            "ignored": self.ignored, "malformed": self.malformed, "thousands": self.thousands,
            "flatten": self.flatten, "oversize": self.oversize,
            "decimal_comma": self.decimal_comma, "time_of_day_field": self.time_of_day_field,
            "encoding": self.encoding, "texts": self.texts, "zoneless": self.zoneless,
            "swapped_format": self.swapped_format, "first_malformed": self.first_malformed, "units": self.units,
            "given": self.given, "set_aside": self.set_aside, "notes": self.notes, "booleans": self.booleans,
            "stream_key": self.stream_key, "series": self.series,
        }


@dataclass(frozen=True)
class Table:
    """A file as the file source will read it: its good records as columns, and what it rejects."""

    frame: pl.DataFrame
    format: str
    delimiter: str
    # Records the file source will dead-letter (a CSV row of the wrong width, a line that is not JSON).
    malformed: int
    first_malformed: str = ""
    # Columns holding lists or empty objects (JSON), kept in the payload only.
    nested: list[str] = field(default_factory=list)
    # Some records hold nested objects, whose fields are columns named with dots ("cpu.load").
    flatten: bool = False
    encoding: Encoding = "utf-8"
    # Records rejected as not UTF-8, and good ones holding text beyond ASCII (UTF-8 that reads).
    not_utf8: int = 0
    beyond_ascii: int = 0
    # The good records of the file, of which `frame` holds a sample (see `_read_records`); 0: all of them.
    rows: int = 0
    # The block of consecutive records each row of a sample comes from (its rows follow one another in the file).
    blocks: list[int] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return self.rows > self.frame.height

    @property
    def height(self) -> int:
        """The good records of the file."""
        return max(self.rows, self.frame.height)


def read_table(path: Path) -> Table:
    """The file read through the file source's own reader (the same rows, the same rejects).

    CSV and JSON values become text (None where missing: empty, `null`, `NA`, ...), so one
    rule types every column whatever the format; Parquet keeps its types.
    """
    fmt = format_of(path)
    if fmt is None:
        raise AnalyzeError(f"{path}: cannot tell the format from the extension (expected "
                           f"{', '.join(FORMATS)}, or one of the text ones with .gz)")
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "no such file"
        raise AnalyzeError(f"{path}: {what}")
    if path.stat().st_size == 0:
        raise AnalyzeError(f"{path}: is empty")
    if fmt == "parquet":
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise AnalyzeError(f"{path}: cannot be read as parquet: {exc}") from None
        table = Table(frame, fmt, "", 0)
    else:
        table = _text_table(path, fmt)
    if table.frame.height == 0:
        bad = f" ({table.malformed} malformed, e.g. {table.first_malformed})" if table.malformed else ""
        if table.format == "csv" and "the header" in table.first_malformed:
            bad += (f": the first line, {safe_text(header_line(path, table.encoding).strip(), 80)!r}, should be the header "
                    "naming the columns (e.g. timestamp,value); if it is a title, delete it or start it with #")
        raise AnalyzeError(f"{path}: has no rows{bad}")
    return table


def _text_table(path: Path, fmt: str) -> Table:
    """The file read as UTF-8 (or UTF-16), else as Windows-1252 when no text beyond ASCII in it is UTF-8
    and the header or rows are not (as Excel's plain "CSV" is in Western Europe): each accented row
    was a dead letter."""
    try:
        table = _read_records(path, fmt, "utf-8")
    except AnalyzeError as exc:
        if "not UTF-8" not in str(exc):
            raise
        try:
            return replace(_read_records(path, fmt, "cp1252"), encoding="cp1252")
        except AnalyzeError:
            raise exc from None
    # One such row is more likely damage than an encoding: it stays a dead letter.
    if table.not_utf8 < 2 or table.beyond_ascii:
        return table
    windows = _read_records(path, fmt, "cp1252")
    return replace(windows, encoding="cp1252") if windows.malformed < table.malformed else table


# Profiling holds at most SAMPLE_BLOCKS blocks of BLOCK_ROWS consecutive records, spread evenly over the
# file (a 2 GB CSV held whole as Python text takes about 23 GB); a file that fits is read whole.
SAMPLE_BLOCKS = 100
BLOCK_ROWS = 1000


# The line Excel writes above a CSV's header to name its separator.
EXCEL_SEPARATOR = re.compile(r"sep=.?", re.IGNORECASE)


def _read_records(path: Path, fmt: str, encoding: Encoding) -> Table:
    """The records of the file, all of them or an evenly spread sample of blocks of consecutive ones (every
    `stride`-th block, the stride doubling whenever more than SAMPLE_BLOCKS are held), with exact counts."""
    delimiter = ""
    if fmt == "csv":
        try:
            header = header_line(path, encoding)
        except (ConfigError, OSError, EOFError, UnicodeDecodeError) as exc:
            raise _unreadable(path, fmt, exc) from None
        if EXCEL_SEPARATOR.fullmatch(header.strip()):
            raise AnalyzeError(f"{path}: the first line, {header.strip()!r}, is Excel's separator line, not the header "
                               "naming the columns (e.g. timestamp,value): delete it or start it with # (the separator "
                               "is found from the header)")
        delimiter = csv_delimiter(header)
    blocks: dict[int, list[dict[str, str | None]]] = {}
    nested: set[str] = set()
    malformed, first_malformed, rows, flatten, not_utf8, beyond_ascii, stride = 0, "", 0, False, 0, 0, 1
    try:
        for record, raw, error in read_records(path, fmt, [], delimiter=delimiter or ",", encoding=encoding):
            if record is None:
                malformed += 1
                not_utf8 += "not UTF-8" in error
                first_malformed = first_malformed or error
                continue
            beyond_ascii += not raw.isascii()
            if any(isinstance(value, dict) and value for value in record.values()):
                record, flatten = flattened(record), True
            block = rows // BLOCK_ROWS
            rows += 1
            if block % stride:
                continue
            nested.update(name for name, value in record.items() if isinstance(value, dict | list))
            blocks.setdefault(block, []).append({name: _cell(value) for name, value in record.items()})
            if len(blocks) > SAMPLE_BLOCKS:
                stride *= 2
                blocks = {b: kept for b, kept in blocks.items() if b % stride == 0}
    except (ConfigError, OSError) as exc:
        raise _unreadable(path, fmt, exc) from None
    records = [record for kept in blocks.values() for record in kept]
    names = list(dict.fromkeys(name for record in records for name in record))
    frame = pl.DataFrame({name: pl.Series(name, [record.get(name) for record in records], dtype=pl.Utf8)
                          for name in names})
    return Table(frame, fmt, delimiter, malformed, first_malformed, sorted(nested), flatten,
                 not_utf8=not_utf8, beyond_ascii=beyond_ascii, rows=rows,
                 blocks=[block for block, kept in blocks.items() for _ in kept])


def _cell(value: Any) -> str | None:
    """A value as text, None where missing (empty, `null`, `NA`, ...)."""
    return None if value is None or str(value).strip().lower() in MISSING else str(value)


def _unreadable(path: Path, fmt: str, exc: Exception) -> AnalyzeError:
    """The file source's own reason when it names the file, else the error with the file named."""
    reason = str(exc)
    return AnalyzeError(reason if reason.startswith(f"{path}: ") else f"{path}: cannot be read as {fmt}: {reason}")


# Dates written day or month first, then the time of day if any, on a 24- or a 12-hour clock ("01:05 PM";
# tried when a column is neither ISO 8601 nor epoch numbers). A unit starting with "%" is one of these formats.
DATES = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%Y/%m/%d", "%Y-%m-%d")
TIMES_OF_DAY = ("%H:%M", "%H:%M:%S", "%H:%M:%S.%f", "%I:%M %p", "%I:%M:%S %p")
DATE_FORMATS = [f"{date}{time}" for date in DATES for time in ("", *(f" {t}" for t in TIMES_OF_DAY))]


def _parsed(values: list[Any], unit: str) -> list[datetime | None]:
    """Each value as a time, or None where it is not one."""
    times: list[datetime | None] = []
    for value in values:
        try:
            times.append(parse_time_format(value, unit) if unit.startswith("%")
                         else parse_time(value, unit))  # type: ignore[arg-type]
        except ParseError:
            times.append(None)
    return times


def date_format_of(values: list[Any]) -> str | None:
    """The DATE_FORMATS entry MIN_TIME_SHARE of the values are written in. Of several: the one reading
    most of them (a day above 12 tells day from month), then the one that keeps the rows most in time
    order, then the one that samples most regularly (daily rows read the wrong way round step by
    months), then day first.

    >>> date_format_of(["01/02/2014 10:00", "13/02/2014 10:05"]), date_format_of(["02/13/2014", "02/14/2014"])
    ('%d/%m/%Y %H:%M', '%m/%d/%Y')
    >>> date_format_of(["01/02/2014", "01/03/2014", "01/04/2014"]), date_format_of(["soon", "later"])
    ('%m/%d/%Y', None)
    >>> date_format_of([f"01/02/2014 10:{m:02d}" for m in range(40)] + ["13/02/2014 10:00"])
    '%d/%m/%Y %H:%M'
    """
    texts = [str(v) for v in values]
    if not texts or not any(sep in texts[0] for sep in "/.-"):
        return None
    best, best_score = None, (-1, -1.0, -1.0)
    for fmt in DATE_FORMATS:
        present = [t for t in _parsed(texts, fmt) if t is not None]
        if len(present) < MIN_TIME_SHARE * len(texts):
            continue
        steps = [b - a for a, b in zip(present, present[1:], strict=False)]
        order = sum(step >= timedelta(0) for step in steps) / max(len(steps), 1)
        regular = max((steps.count(step) for step in set(steps)), default=0) / max(len(steps), 1)
        if (len(present), order, regular) > best_score:
            best, best_score = fmt, (len(present), order, regular)
    return best


def _storable(values: list[Any], unit: str) -> list[datetime | None]:
    """Each value as a time the store can hold, or None (landing dead-letters the others)."""
    low, high = STORE_TIME_RANGE
    return [t if t is not None and low <= t <= high else None for t in _parsed(values, unit)]


def _mostly_times(values: list[Any], unit: str) -> bool:
    """At least MIN_TIME_SHARE of the values read as times (a few bad rows become dead letters)."""
    return bool(values) and sum(t is not None for t in _parsed(values, unit)) >= MIN_TIME_SHARE * len(values)


def _numbers(column: pl.Series) -> pl.Series:
    """The values as numbers, null where one is not (booleans, nested values and what has no text form, as
    Parquet durations and bytes, never are)."""
    nothing = pl.Series(column.name, [None] * column.len(), dtype=pl.Float64)
    if column.dtype == pl.Boolean or column.dtype.is_nested():
        return nothing
    try:
        return column.cast(pl.Utf8).cast(pl.Float64, strict=False)
    except pl.exceptions.PolarsError:  # no text form (a duration), or bytes that are not text
        return nothing


def time_unit_of(column: pl.Series, hinted: bool) -> str | None:
    """"iso", an epoch unit ("s", "ms", "us", "ns"), or None when the column is not a time."""
    present = column.drop_nulls()
    if present.len() == 0 or column.dtype == pl.Boolean or column.dtype.is_nested():
        return None
    if isinstance(column.dtype, pl.Datetime | pl.Date):
        return "iso"
    numbers = _numbers(present)
    if numbers.null_count() == 0:
        if compact := compact_date_format(present, hinted or "year" in name_words(str(column.name))):
            return compact
        if hinted and excel_dates(numbers, str(column.name)):
            return "excel" if _mostly_times(present.head(SAMPLE).to_list(), "excel") else None
        unit = epoch_unit(numbers)
        # Plain numbers pass as epoch times only when named like one, or after 1973 and rising.
        if not hinted and not all(epoch_evidence(numbers, unit)):
            return None
        return unit if _mostly_times(present.head(SAMPLE).to_list(), unit) else None
    if numbers.null_count() < present.len() * MIN_TIME_SHARE:
        return None  # mostly numbers, some text: not a time column
    # Spread over the file: the first rows may all fall on a day that reads either way (02/01/2014), or in
    # the hour a clock change skips.
    sample = present.gather_every(max(1, present.len() // SAMPLE)).cast(pl.Utf8).to_list()
    return "iso" if _mostly_times(sample, "iso") else date_format_of(sample)


def epoch_unit(numbers: pl.Series) -> str:
    """The epoch unit numbers would be in, by their size: seconds up to 1e11 (the year 5138), then ms, us, ns."""
    magnitude = float(numbers.abs().median())  # type: ignore[arg-type]
    return "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us" if magnitude < 1e17 else "ns"


def epoch_evidence(numbers: pl.Series, unit: str) -> tuple[bool, bool]:
    """(after 1973, rising): what tells numbers that are epoch times from other numbers.

    >>> epoch_evidence(pl.Series([1.7e9, 1.7e9 + 60]), "s"), epoch_evidence(pl.Series([50.2, 48.9, 51.0]), "s")
    ((True, True), (False, False))
    """
    seconds = numbers / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    rising = float((numbers.diff().drop_nulls() >= 0).mean() or 0) >= 0.95 if numbers.len() > 1 else False  # type: ignore[arg-type]
    return float(seconds.min()) >= 1e8, rising  # type: ignore[arg-type]


# Dates written as whole numbers, by their number of digits: 20150101, 20150101093000, 2015.
COMPACT_DATES = {8: "%Y%m%d", 14: "%Y%m%d%H%M%S", 4: "%Y"}


def compact_date_format(values: pl.Series, dated: bool) -> str | None:
    """The COMPACT_DATES format every value of a column named like a time (or a year) is written in, all of them
    dates the store can hold: such numbers are dates, not epoch seconds of 1970 (20150101 s is 1970-08-22).

    >>> compact_date_format(pl.Series(["20150101", "20150102"]), True), compact_date_format(pl.Series([1900, 1901]), True)
    ('%Y%m%d', '%Y')
    >>> compact_date_format(pl.Series(["20151301"]), True), compact_date_format(pl.Series(["20150101"]), False)
    (None, None)
    """
    texts = [str(v).strip() for v in values.to_list()]
    fmt = COMPACT_DATES.get(len(texts[0])) if dated and texts else None
    if fmt is None or not all(t.isdigit() and len(t) == len(texts[0]) for t in texts):
        return None
    return fmt if all(t is not None for t in _storable(texts, fmt)) else None


def excel_dates(numbers: pl.Series, name: str) -> bool:
    """Whether the numbers of a column named like a time are spreadsheet serial dates (days since 1899-12-30):
    all of them dates from 1950 to 2100 so read, and the column named like a date or its numbers stepping
    by a fraction of a day (as epoch seconds they would be the first hours of 1970, a second or less apart).

    >>> excel_dates(pl.Series([45292.0, 45292.25, 45292.5]), "time"), excel_dates(pl.Series([45292, 45293]), "Date")
    (True, True)
    >>> excel_dates(pl.Series([45292, 45293]), "time"), excel_dates(pl.Series([1704067200.0]), "date")
    (False, False)
    """
    if not EXCEL_DATES[0] <= float(numbers.min()) <= float(numbers.max()) <= EXCEL_DATES[1]:  # type: ignore[arg-type]
        return False
    if any(word in name.lower() for word in ("date", "day")):
        return True
    steps = numbers.sort().diff()
    steps = steps.filter(steps > 0)
    return steps.len() > 0 and float(steps.median()) < 1  # type: ignore[arg-type]


def find_time_column(frame: pl.DataFrame, path: Path, named: str | None) -> tuple[str, str, str]:
    """(column, unit) of the event time, and why it was chosen when that is a judgement ("" otherwise).

    Of the columns that read as times, the first of the best kind: named like a time (TIME_NAMES), then
    holding times written as text (ISO 8601, dates), then numbers in a column named with a hint of a time
    ("response_time", "sent_at", "when"), then bare numbers that read as epoch times (rising, after 1973).
    A counter (bytes_total = 2e9 + ...) reads as epoch seconds too: it is the time only when no other column
    can be.
    """
    if named is not None:
        if named not in frame.columns:
            raise AnalyzeError(f"{path}: no column {named!r} (columns: {', '.join(frame.columns)})")
        unit = time_unit_of(frame[named], hinted=True)
        if unit is None:
            raise AnalyzeError(f"{path}: column {named!r} does not hold ISO 8601 times, epoch numbers (s, ms, us, "
                               f"ns) or spreadsheet serial dates, nor dates written {', '.join(DATES)}, alone or "
                               f"followed by a time of day {', '.join(TIMES_OF_DAY)} (e.g. {_first_value(frame[named])!r} "
                               "is not one of them)")
        numbers = _numbers(frame[named].drop_nulls())
        if unit in EPOCH_UNITS and unit != "excel" and not any(epoch_evidence(numbers, unit)):
            # Neither dated after 1973 nor rising: a value column named by mistake (cpu = 50 is 1970-01-01 00:00:50).
            others = [c for c in frame.columns if c != named and time_unit_of(frame[c], hinted=_hinted(c))]
            first = _parsed([numbers[0]], unit)[0]
            raise AnalyzeError(
                f"{path}: column {named!r} holds numbers like {_first_value(frame[named])!r} that read as epoch times "
                f"({unit}) of {f'{first:%Y-%m-%d %H:%M:%S}' if first else 'no date'}, not rising: not a time column "
                f"(columns that read as times: {', '.join(others) or 'none'})")
        return named, unit, ""
    ranked = sorted(frame.columns, key=lambda c: (c.lower() not in TIME_NAMES, not _hinted(c)))
    best: tuple[int, str, str] | None = None
    passed_over: list[str] = []
    for column in ranked:
        unit = time_unit_of(frame[column], hinted=_hinted(column))
        if unit is None:
            continue
        rank = 0 if column.lower() in TIME_NAMES else 1 if unit not in EPOCH_UNITS else 2 if _hinted(column) else 3
        if best is None or rank < best[0]:
            if best is not None:
                passed_over.append(best[1])
            best = (rank, column, unit)
        else:
            passed_over.append(column)
        if best[0] <= 1:  # a text time: the columns after it are named less like a time, none can be better
            break
    if best is not None:
        rank, column, unit = best
        if rank >= 2:
            named_so = "named like a time, " if rank == 2 else ""
            return column, unit, (f"time column {column!r}: {named_so}its numbers read as epoch times ({unit}), and no "
                                  "column holds dates; if it is not the time, name that with --time-field")
        bare = [c for c in passed_over if c.lower() not in TIME_NAMES and not _hinted(c)]
        return column, unit, (f"{', '.join(bare)} also read{'s' if len(bare) == 1 else ''} as epoch times but "
                              f"{'is a' if len(bare) == 1 else 'are'} bare number{'' if len(bare) == 1 else 's'}: "
                              f"{column!r} is the time" if bare else "")
    # A column named like a time whose text mostly reads as one: say which rows do not, and why.
    likely = frame[ranked[0]].drop_nulls().cast(pl.Utf8).to_list() if _hinted(ranked[0]) else []
    if likely and sum(t is not None for t in _parsed(likely, "iso")) > len(likely) / 2:
        raise few_times(path, ranked[0], likely, "iso", frame.height)
    raise AnalyzeError(
        f"{path}: no column holds times (ISO 8601 text, epoch numbers or dates like 31/12/2014 23:05); "
        "name it with --time-field "
        f"(columns: {', '.join(frame.columns)})"
    )


def _first_value(column: pl.Series) -> Any:
    present = column.drop_nulls()
    return safe_text(present[0], 60) if present.len() else None


def few_times(path: Path, column: str, values: list[Any], unit: str, rows: int) -> AnalyzeError:
    """The error for a time column whose rows too seldom hold a time, with why its first bad value is not one
    (not ISO 8601, an unknown zone, a local time a clock change skips)."""
    parsed = _storable(values, unit)
    bad = next(v for v, t in zip(values, parsed, strict=True) if t is None)
    return AnalyzeError(f"{path}: column {column!r}: only {sum(t is not None for t in parsed)} of {rows} rows "
                        f"hold a time (e.g. {bad!r} does not: {not_a_time(bad, unit)})")


def not_a_time(value: Any, unit: str) -> str:
    """Why `value` is no time the store can hold, read as `unit`."""
    try:
        parse_time_format(value, unit) if unit.startswith("%") else parse_time(value, unit)  # type: ignore[arg-type]
    except ParseError as exc:
        return str(exc)
    return f"{value} is outside the years {STORE_TIME_RANGE[0].year}-{STORE_TIME_RANGE[1].year} the store holds"


def _hinted(column: str) -> bool:
    """Whether a column is named like a time.

    >>> [_hinted(n) for n in ("Timestamp", "created_at", "when", "sent_ts", "bytes_total", "status")]
    [True, True, True, True, False, False]
    """
    name = column.lower()
    words = name_words(column)
    return (name in TIME_NAMES or any(hint in name for hint in TIME_HINTS)
            or (len(words) > 0 and words[-1] in TIME_WORDS and (len(words) > 1 or words[-1] != "at")))


def sampling(times: list[datetime], blocks: list[int] | None = None) -> tuple[float, bool, int]:
    """(median step in seconds, irregular?, gaps) over the distinct sorted times (of each block of a sample,
    `blocks` giving each time's).

    Irregular: more than a fifth of the steps differ from the median by over 10%.
    A gap is a step longer than five median steps.

    >>> t0 = datetime(2014, 1, 1, tzinfo=UTC)
    >>> sampling([t0 + timedelta(minutes=5 * i) for i in (0, 1, 2, 3, 10, 11)])
    (300.0, False, 1)
    """
    by_block: dict[int, set[datetime]] = {}
    for time, block in zip(times, blocks or [0] * len(times), strict=True):
        by_block.setdefault(block, set()).add(time)
    steps = pl.Series([(b - a).total_seconds() for distinct in map(sorted, by_block.values())
                       for a, b in zip(distinct, distinct[1:], strict=False)], dtype=pl.Float64)
    if steps.len() == 0:
        return 1.0, False, 0
    median = float(steps.median())  # type: ignore[arg-type]
    off = float(((steps - median).abs() > 0.1 * median).mean())  # type: ignore[arg-type]
    return median, off > 0.2, int((steps > 5 * median).sum())


# Of a file's distinct times, a pass over it holds this many at most; beyond, the first and last of each day.
MAX_DISTINCT_TIMES = 2000


@dataclass
class TimeSpread:
    """The times of every record of a file, gathered in one pass holding a bounded amount: how many are
    storable, the first and last, and enough of the times for `stretches` (whose gaps are a day at least):
    all distinct ones while few (a file more than RUN_COST_DAYS a row apart has few in the store's years),
    else the first and last of each day."""

    count: int = 0
    distinct: set[datetime] | None = field(default_factory=set)
    days: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)

    @classmethod
    def of(cls, times: list[datetime]) -> TimeSpread:
        spread = cls()
        for time in times:
            spread.add(time)
        return spread

    def add(self, time: datetime) -> None:
        self.count += 1
        day = time.toordinal()
        first, last = self.days.get(day, (time, time))
        self.days[day] = (min(first, time), max(last, time))
        if self.distinct is not None:
            self.distinct.add(time)
            if len(self.distinct) > MAX_DISTINCT_TIMES:
                self.distinct = None

    @property
    def first(self) -> datetime:
        return self.days[min(self.days)][0]

    @property
    def last(self) -> datetime:
        return self.days[max(self.days)][1]

    def times(self) -> list[datetime]:
        return sorted(self.distinct if self.distinct is not None else {t for pair in self.days.values() for t in pair})


def all_times(path: Path, table: Table, column: str, time_of_day: str, unit: str) -> TimeSpread:
    """The storable times of every record of a sampled file, read as the file source reads them."""
    spread = TimeSpread()
    try:
        for record, _, _ in read_records(path, table.format, [], delimiter=table.delimiter or ",",
                                         encoding=table.encoding):
            if record is None:
                continue
            if table.flatten:
                record = flattened(record)
            # As the profile's stamps: "<date> <time of day>", missing when either part is.
            parts = [_cell(record.get(name)) for name in (column, time_of_day) if name]
            time = _storable([" ".join(map(str, parts))], unit)[0] if None not in parts else None
            if time is not None:
                spread.add(time)
    except (ConfigError, OSError) as exc:
        raise _unreadable(path, table.format, exc) from None
    return spread


def stretches(times: list[datetime], interval_s: float) -> list[tuple[datetime, datetime]]:
    """(first, last) of the runs of data between gaps longer than LONG_GAP_STEPS sampling intervals
    and a day: the windows of such a gap hold nothing, so they are not planned (a file of two
    days, then five years later two more, is 4 days of windows, not 5 years of them). When its rows
    are more than RUN_COST_DAYS apart on average, at every gap longer than that too (windows are a day
    at most, so such a file would otherwise be many windows per row).

    >>> t0, five = datetime(2015, 1, 1, tzinfo=UTC), timedelta(minutes=5)
    >>> times = [t0 + five * i for i in range(3)] + [t0 + timedelta(days=1800) + five * i for i in range(3)]
    >>> [(a.date().isoformat(), b.isoformat()[11:16]) for a, b in stretches(times, 300)]
    [('2015-01-01', '00:10'), ('2019-12-06', '00:10')]
    >>> week = timedelta(days=7)  # weekly data: a 5-year gap is under 1,000 steps
    >>> len(stretches([t0 + week * i for i in range(100)] + [t0 + timedelta(days=2500) + week * i for i in range(100)], 86400 * 7))
    1
    >>> years = [datetime(1900 + 3 * i, 1, 1, tzinfo=UTC) for i in range(5)] + [datetime(1912, 1, 9, tzinfo=UTC)]
    >>> [(a.year, b.date().isoformat()) for a, b in stretches(years, 86400 * 1096)]
    [(1900, '1900-01-01'), (1903, '1903-01-01'), (1906, '1906-01-01'), (1909, '1909-01-01'), (1912, '1912-01-09')]
    """
    distinct = sorted(set(times))
    long_gap = max(timedelta(days=1), timedelta(seconds=interval_s * LONG_GAP_STEPS))
    if distinct[-1] - distinct[0] > timedelta(days=RUN_COST_DAYS) * (len(distinct) - 1):
        long_gap = min(long_gap, timedelta(days=RUN_COST_DAYS))
    runs, start = [], distinct[0]
    for before, after in zip(distinct, distinct[1:], strict=False):
        if after - before > long_gap:
            runs.append((start, before))
            start = after
    return [*runs, (start, distinct[-1])]


def bar_size(interval_s: float) -> int:
    """The smallest round bar size at or above the sampling interval, within BAR_TOLERANCE (at most a day).

    >>> [bar_size(s) for s in (0.2, 1, 7, 300, 301, 310, 3600.03, 86400, 10 * 86400)]
    [1, 1, 10, 300, 300, 600, 3600, 86400, 86400]
    """
    return next((size for size in BAR_SIZES if size * (1 + BAR_TOLERANCE) >= interval_s), MAX_BAR_SECONDS)


def window_minutes(bars: list[int], span: timedelta, whole: timedelta | None = None) -> int:
    """The shortest window holding BARS_PER_WINDOW of the largest bar and whole bars of every
    source that cuts `span` (the longest run of data) into at most TARGET_WINDOWS windows, and the
    `whole` partition range into at most MAX_PARTITIONS (else the longest, a day).

    >>> window_minutes([300], timedelta(days=10)), window_minutes([1], timedelta(hours=2))
    (180, 2)
    >>> window_minutes([86400], timedelta(days=3650)), window_minutes([60, 300], timedelta(days=1))
    (1440, 60)
    >>> window_minutes([60], timedelta(days=1), timedelta(days=3650))
    180
    """
    whole = whole or span
    fitting = [m for m in WINDOW_MINUTES if all(m * 60 % bar == 0 for bar in bars)]
    if not fitting:
        return WINDOW_MINUTES[-1]
    for minutes in fitting:
        window = timedelta(minutes=minutes)
        if (minutes * 60 >= BARS_PER_WINDOW * max(bars) and span / window <= TARGET_WINDOWS
                and whole / window <= MAX_PARTITIONS):
            return minutes
    return fitting[-1]


def source_name(path: Path, taken: set[str]) -> str:
    """The file's stem as a source name (letters, digits, `_`, `-`), unique among `taken`.

    >>> source_name(Path("cpu load (2014).csv"), {"cpu_load_2014"})
    'cpu_load_2014_2'
    >>> source_name(Path("my file.v2 (ünïcode).csv"), set()), source_name(Path("温度.csv"), set())
    ('my_file_v2_unicode', 'file')
    """
    # Accented letters keep their base letter (ü → u); other scripts leave nothing to keep.
    ascii_stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9_\-]+", "_", ascii_stem).strip("_")[:60] or "file"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def reads_as_value(name: str) -> bool:
    """Whether a header cell is a number or a time rather than a column name (a file without a header
    line has its first row read as one, which would name the columns after that row's values).

    >>> [reads_as_value(n) for n in ("2015-01-01T00:00:00+00:00", "-0.25", "1/2/2015 13:05", "1e3")]
    [True, True, True, True]
    >>> [reads_as_value(n) for n in ("timestamp", "value", "2015 sales", "")]
    [False, False, False, False]
    """
    text = name.strip()
    if not text:
        return False
    try:
        float(text)
        return True
    except ValueError:
        pass
    return any(parsed is not None for unit in ("iso", *DATE_FORMATS) for parsed in _parsed([text], unit))


def profile_file(path: Path, time_field: str | None, taken: set[str]) -> FileProfile:
    table = read_table(path)
    frame = table.frame
    if table.format == "csv" and all(reads_as_value(name) for name in frame.columns):
        raise AnalyzeError(f"{path}: the first line ({table.delimiter.join(frame.columns)}) holds values, not column "
                           "names: add a header line naming the columns (e.g. timestamp,value)")
    column, unit, why = find_time_column(frame, path, time_field)
    time_of_day, unit = time_of_day_column(frame, column, unit)
    notes = [why] if why else []
    stamps = frame[column] if not time_of_day else frame[column].cast(pl.Utf8) + " " + frame[time_of_day]
    present = stamps.drop_nulls()
    values = present.to_list()
    storable = _storable(values, unit)
    times = [t for t in storable if t is not None]
    if len(times) < MIN_TIME_SHARE * frame.height:
        raise few_times(path, column, values, unit, frame.height)
    # What the first dead letter will say: a record the reader rejects, else a row without a (storable) time.
    bad = next((v for v, t in zip(values, storable, strict=True) if t is None), None)
    first_malformed = safe_text(table.first_malformed or (
        not_a_time(bad, unit) if bad is not None else "timestamp is missing" if len(values) < frame.height else ""), 200)
    if len(set(times)) < 2:
        raise AnalyzeError(f"{path}: needs rows at two different times at least, to tell how often it is sampled")
    # A sample's blocks lie apart in the file: steps are measured within each.
    blocks = [b for b, s in zip(table.blocks, stamps.is_not_null().to_list(), strict=True) if s] if table.sampled else []
    interval, irregular, gaps = sampling(times, [b for b, t in zip(blocks, storable, strict=False) if t is not None])
    spread = all_times(path, table, column, time_of_day, unit) if table.sampled else TimeSpread.of(times)
    if table.sampled:
        notes.append(f"profiled from {frame.height} of its rows spread over the file; the rows, dead letters and "
                     "first and last times counted in all of them")
    numeric, categorical, ignored, booleans = [], [], [], []
    thousands: dict[str, str] = {}
    decimal_comma: list[str] = []
    units: dict[str, str] = {}
    set_aside: dict[str, str] = {}
    for position, name in enumerate(frame.columns):
        if name in (column, time_of_day):
            continue
        values_of = frame[name].drop_nulls()
        if values_of.len() == 0 or values_of.dtype.is_nested() or name in table.nested:
            ignored.append(name)
            continue
        numbers = _numbers(values_of)
        if values_of.len() > 1 and values_of.n_unique() == 1:
            set_aside[name] = f"{CONSTANT}: {safe_text(values_of[0], 40)}"
            continue
        # A sample's rows follow one another within its first block only.
        consecutive = numbers.head(BLOCK_ROWS) if table.sampled and numbers.n_unique() == numbers.len() else numbers
        if numbers.null_count() == 0 and (why := identifier_reason(name, consecutive, position == 0)):
            set_aside[name] = f"a row number/identifier: {why}"
            continue
        separator = thousands_separator(values_of, table.delimiter) if values_of.dtype == pl.Utf8 else None
        if numbers.null_count() == 0 and code_column(name, numbers):
            categorical.append(name)
        elif numbers.null_count() <= (1 - MIN_NUMBER_SHARE) * values_of.len():
            numeric.append(name)
        elif boolean_column(values_of):
            numeric.append(name)
            booleans.append(name)
        elif separator is not None:
            numeric.append(name)
            thousands[name] = separator
        elif values_of.dtype == pl.Utf8 and written_with_decimal_comma(values_of, table.delimiter):
            numeric.append(name)
            decimal_comma.append(name)
        elif values_of.dtype == pl.Utf8 and (unit_of := written_with_unit(values_of)):
            numeric.append(name)
            units[name] = unit_of
        elif values_of.n_unique() <= min(MAX_CATEGORIES, max(2, values_of.len() // 10)):
            categorical.append(name)
        else:
            ignored.append(name)
    if not numeric and not categorical:
        # The file's only values mix numbers with text (a logger that wrote "error" for a while): its numbers
        # are still worth a look; the text is left out of the bar statistics and said so.
        numeric = [name for name in ignored if values_share(frame[name]) >= MIN_MIXED_NUMBER_SHARE]
        ignored = [name for name in ignored if name not in numeric]
        texts = {name: int(_numbers(frame[name]).is_null().sum() - frame[name].null_count()) for name in numeric}
    else:
        texts = {}
    # Columns set aside for their values alone (one value, a ramp), not for their name or place: when they are all
    # the file has, they are what the user wants looked at (a ramp "value" tries the tool), so they are watched.
    by_values = {name: why for name, why in set_aside.items() if why.startswith(CONSTANT) or why.endswith(BY_SHAPE)}
    if not numeric and not categorical and by_values:
        numeric = [name for name in by_values if values_share(frame[name]) >= MIN_NUMBER_SHARE]
        categorical = [name for name in by_values if name not in numeric]
        notes.append(", ".join(f"{name} ({why})" for name, why in by_values.items())
                     + " watched all the same: the file has no other column")
        set_aside = {name: why for name, why in set_aside.items() if name not in by_values}
    ambiguous = [why for name in categorical + ignored
                 if frame[name].dtype == pl.Utf8 and (why := comma_ambiguity(name, frame[name], bool(table.delimiter)))]
    if not numeric and not categorical:
        examples = [f"{name!r} holds e.g. {_not_a_number(frame[name])!r}" for name in ignored
                    if frame[name].drop_nulls().len()]
        raise AnalyzeError(
            f"{path}: no numeric or categorical column besides the time column {column!r}"
            + "".join(f"; {name!r} is {why}" for name, why in set_aside.items())
            + (f" ({'; '.join(examples)}: numbers must be plain like 1234.5, or grouped like 1,234.5 "
               "or 1 234, or with a decimal comma like 1234,5 in a file not separated by commas)"
               if examples else "")
            + "".join(f"; {why}" for why in ambiguous)
        )
    notes += ambiguous
    oversize = {name: count for name in numeric if name not in thousands and name not in decimal_comma
                and (count := int((_numbers(frame[name]).abs() > LARGEST_VALUE).sum()))}
    key = series_column(frame, stamps, categorical)
    rows_of = Counter(frame[key].drop_nulls().to_list()) if key else Counter()
    series = sorted(rows_of, key=lambda value: (-rows_of[value], value))
    categorical = [name for name in categorical if name != key]
    notes += shared_time_notes(times, categorical + [key] if key else categorical)
    source = source_name(path, taken)
    if not numeric:
        mixed = {name: found for name in categorical + ignored if len(found := number_units(frame[name])) > 1}
        notes.append(f"no detector watches stream {source}: its columns are categorical ({', '.join(categorical)}), "
                     "counted per bar" + "".join(f"; {name} holds numbers in several units ({', '.join(found)}): "
                                                  "write them in one to have them read as numbers"
                                                  for name, found in mixed.items()))
    return FileProfile(path.resolve(), source, table.format, table.height, column, unit,
                       spread.first, spread.last, interval, irregular, gaps, numeric, categorical, ignored,
                       # Rows without a readable time are dead letters of the file source too.
                       table.delimiter, table.malformed + table.height - spread.count, thousands, table.flatten,
                       stretches(spread.times(), interval), oversize, decimal_comma, time_of_day, table.encoding, texts,
                       any(zoneless(v, unit) for v in values[:SAMPLE]), swapped_format(values, unit), first_malformed,
                       units, set_aside=set_aside, notes=notes, booleans=booleans, stream_key=key, series=series)


# A column naming series holds at most this many distinct values, each at MIN_SERIES_TIMES distinct times at least.
MAX_SERIES = MAX_CATEGORIES
MIN_SERIES_TIMES = 3


def series_column(frame: pl.DataFrame, stamps: pl.Series, categorical: list[str]) -> str:
    """The categorical text column naming the series of a long-format file (timestamp,host,value), or "".

    Such a column tells apart the rows sharing a time: the times repeat, the (time, value) pairs do not
    (MIN_TIME_SHARE of them), and each of its few values comes back over time (a host reports again and
    again). Free text and ids do not repeat so; status codes are numbers, counted per bar, not series.

    >>> t = [f"2024-03-01T00:0{i // 2}:00Z" for i in range(8)]
    >>> frame = pl.DataFrame({"t": t, "host": ["a", "b"] * 4, "level": ["ok"] * 7 + ["bad"]})
    >>> series_column(frame, frame["t"], ["host", "level"]), series_column(frame[::2], frame["t"][::2], ["host"])
    ('host', '')
    """
    for name in categorical:
        pairs = pl.DataFrame({"time": stamps, "key": frame[name]}).drop_nulls()
        if (frame[name].dtype != pl.Utf8 or _numbers(pairs["key"]).null_count() < pairs.height
                or pairs["time"].n_unique() == pairs.height):
            continue
        times_per_key = pairs.group_by("key").agg(pl.col("time").n_unique())["time"]
        if (times_per_key.len() <= MAX_SERIES and int(times_per_key.min()) >= MIN_SERIES_TIMES  # type: ignore[arg-type]
                and pairs.unique().height >= MIN_TIME_SHARE * pairs.height):
            return name
    return ""


def shared_time_notes(times: list[datetime], categorical: list[str]) -> list[str]:
    """A note when most times hold several rows and no categorical column tells them apart (a host, a
    sensor): the bars pool rows that may be of different things, or the time lacks a part (an hour column).

    >>> t = datetime(2014, 1, 1, tzinfo=UTC)
    >>> shared_time_notes([t, t, t, t + timedelta(days=1)] * 2, [])
    ['4 rows share each time (the median) and no column tells them apart: the bars pool them; if another column holds part of the time, name it as time_of_day_field in sources.yaml']
    >>> shared_time_notes([t, t], ["host"]), shared_time_notes([t, t + timedelta(days=1)], [])
    ([], [])
    """
    per_time = pl.Series(list(Counter(times).values()))
    median = float(per_time.median())  # type: ignore[arg-type]
    if median <= 1 or categorical:
        return []
    return [f"{median:g} rows share each time (the median) and no column tells them apart: the bars pool them; "
            "if another column holds part of the time, name it as time_of_day_field in sources.yaml"]


def number_units(values: pl.Series) -> list[str]:
    """The units the numbers of a text column are written with ("51ms", "0.051s" → ms, s), most used first.

    >>> number_units(pl.Series(["51ms", "0.051s", "49ms", None])), number_units(pl.Series([1, 2]))
    (['ms', 's'], [])
    """
    if values.dtype != pl.Utf8:
        return []
    found = Counter(reading[1] for text in values.drop_nulls().to_list() if (reading := unit_number(text)) is not None)
    return [unit for unit, _ in found.most_common()]


def swapped_format(values: list[Any], unit: str) -> str:
    """`unit` with day and month the other way round when that reads every value `unit` reads, else "".

    >>> swapped_format(["01/02/2024 10:00", "01/02/2024 11:00"], "%d/%m/%Y %H:%M")
    '%m/%d/%Y %H:%M'
    >>> swapped_format(["13/02/2024", "14/02/2024"], "%d/%m/%Y"), swapped_format(["2024-02-01"], "iso")
    ('', '')
    >>> swapped_format(["2024-02-01 01:05:00 PM"], "%Y-%m-%d %I:%M:%S %p")
    ''
    """
    # Dates written year first are year, month, day by convention (ISO 8601 and its slashed kin).
    if "%d" not in unit or "%m" not in unit or unit.startswith("%Y"):
        return ""
    other = unit.replace("%d", "%DAY").replace("%m", "%d").replace("%DAY", "%m")
    for value in values:  # the first that reads one way only settles it
        if _parsed([value], unit)[0] is not None and _parsed([value], other)[0] is None:
            return ""
    return other


# Names of a column holding the hour of the day (0-23) next to a date column.
HOUR_NAMES = ("hour", "hours", "hh", "hr")
# The time of day without a date: "9:05", "09:05:00", "09:05:00.250".
TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")


def time_of_day_column(frame: pl.DataFrame, column: str, unit: str) -> tuple[str, str]:
    """("", unit) when the time column tells the time; else (the column next to it holding the time of
    day, the unit of "<date> <time of day>"): a file with `date` and `time` columns is sampled within
    the day, not once a day. The time of day is written "09:05" and the like, or is the whole hour 0-23
    in a column named like the hour (`hour`, `hh`, `hr`).

    >>> frame = pl.DataFrame({"day": ["31/12/2014", "01/01/2015"], "at": ["23:55", "00:05"], "v": ["1", "2"]})
    >>> time_of_day_column(frame, "day", "%d/%m/%Y"), time_of_day_column(frame, "at", "iso")
    (('at', '%d/%m/%Y %H:%M'), ('', 'iso'))
    >>> time_of_day_column(pl.DataFrame({"date": ["2024-03-01", "2024-03-01"], "hour": ["0", "23"]}), "date", "iso")
    ('hour', '%Y-%m-%d %H')
    """
    if not (unit == "iso" or unit.startswith("%")) or any(code in unit for code in ("%H", "%I", "%M")):
        return "", unit
    dates = frame[column].cast(pl.Utf8)
    present = dates.drop_nulls().head(SAMPLE).to_list()
    if any(t is not None and t.time() != datetime.min.time() for t in _parsed(present, unit)):
        return "", unit
    for name in frame.columns:
        texts = frame[name].drop_nulls()
        if name == column or texts.len() < MIN_TIME_SHARE * frame.height:
            continue
        if name.strip().lower() in HOUR_NAMES:
            hours = _numbers(texts)
            if hours.null_count() == 0 and bool(hours.is_between(0, 23).all()) and not bool((hours % 1 != 0).any()):
                joined = f"{'%Y-%m-%d' if unit == 'iso' else unit} %H"
                if _mostly_times((dates + " " + frame[name].cast(pl.Utf8)).drop_nulls().head(SAMPLE).to_list(), joined):
                    return name, joined
            continue
        if texts.dtype != pl.Utf8:
            continue
        sample = [str(t) for t in texts.head(SAMPLE).to_list()]
        if sum(bool(TIME_OF_DAY.fullmatch(t)) for t in sample) < MIN_TIME_SHARE * len(sample):
            continue
        combined = (dates + " " + frame[name]).drop_nulls().head(SAMPLE)
        for joined in ([unit] if unit == "iso" else [f"{unit} {t}" for t in ("%H:%M", "%H:%M:%S", "%H:%M:%S.%f")]):
            if _mostly_times(combined.to_list(), joined):
                return name, joined
    return "", unit


def thousands_separator(values: pl.Series, delimiter: str) -> str | None:
    """The thousands separator of a text column of numbers written like "1,234.5" or "1 234", or None.

    MIN_NUMBER_SHARE of the values must be numbers, plain or grouped by one separator, and at least
    one grouped. A comma must not pass for a decimal comma ("1,234" alone could be 1.234): it is a
    thousands separator in a comma-separated file (whose decimal mark is "."), or when some value
    also holds a "." decimal or two commas.

    >>> thousands_separator(pl.Series(["1,234.5", "987.25"]), ";"), thousands_separator(pl.Series(["1 234", "5"]), ";")
    (',', ' ')
    >>> thousands_separator(pl.Series(["1,234", "2,500"]), ","), thousands_separator(pl.Series(["1,234", "2,500"]), ";")
    (',', None)
    >>> thousands_separator(pl.Series(["1,5", "2,25"]), ";"), thousands_separator(pl.Series(["0,125", "1,500"]), ",")
    (None, None)
    """
    texts = [str(v).strip() for v in values.to_list()]
    plain = _numbers(pl.Series(texts, dtype=pl.Utf8)).is_not_null().to_list()
    for separator in THOUSANDS_SEPARATORS:
        grouped = [grouped_number(t, separator) is not None for t in texts]
        if not any(grouped) or sum(g or p for g, p in zip(grouped, plain, strict=True)) < MIN_NUMBER_SHARE * len(texts):
            continue
        if separator == "," and delimiter != "," and not any("." in t or t.count(",") > 1 for t, g in zip(texts, grouped, strict=True)
                                        if g or "," not in t):
            continue
        return separator
    return None


# The list separators of spreadsheets whose decimal mark is a comma (Excel writes ";" exactly where it is).
DECIMAL_COMMA_DELIMITERS = (";", "\t")


def written_with_decimal_comma(values: pl.Series, delimiter: str) -> bool:
    """Whether a text column of a file not separated by commas holds numbers written with a decimal comma
    ("-1,5", "1.234,5"): MIN_NUMBER_SHARE of them such numbers or plain whole ones, some with a comma, and
    either a comma that cannot group thousands ("1,5", "0,080", "1234,567") or the file separated by ";" or
    tabs and no value holding a "." ("49,604" there is 49.604; elsewhere it could be 49604, and is not read).

    >>> written_with_decimal_comma(pl.Series(["-1,5", "2", "1.234,25"]), ";"), written_with_decimal_comma(pl.Series(["1,5"]), ",")
    (True, False)
    >>> written_with_decimal_comma(pl.Series(["0,080", "-0,118"]), "|"), written_with_decimal_comma(pl.Series(["1,500"]), "|")
    (True, False)
    >>> written_with_decimal_comma(pl.Series(["1,500", "2,250"]), ";"), written_with_decimal_comma(pl.Series(["1.5", "2,5"]), ";")
    (True, False)
    """
    if delimiter == ",":
        return False
    texts = [str(v).strip() for v in values.to_list()]
    commas = [t for t in texts if "," in t and decimal_comma_number(t) is not None]
    if not commas or sum(decimal_comma_number(t) is not None for t in texts) < MIN_NUMBER_SHARE * len(texts):
        return False
    return (delimiter in DECIMAL_COMMA_DELIMITERS and not any("." in t for t in texts)) or any(
        grouped_number(t, ",") is None for t in commas)


def comma_ambiguity(name: str, values: pl.Series, delimited: bool) -> str:
    """Why a text column of numbers written with a comma before exactly 3 digits is not read (one reading is
    as good as the other: "49,604" is 49.604 or 49604), and what makes it read; "" for other columns."""
    texts = [str(v).strip() for v in values.drop_nulls().to_list()]
    if not any("," in t for t in texts) or (
            sum(decimal_comma_number(t) is not None for t in texts) < MIN_NUMBER_SHARE * len(texts)):
        return ""
    example = next(t for t in texts if "," in t)
    return (f"{name} read as text: a comma before exactly 3 digits may group thousands or mark decimals "
            f"({safe_text(example, 40)!r}); write its numbers with a decimal point"
            + (", or save the file separated by ';' to have the comma read as decimal" if delimited else ""))


def written_with_unit(values: pl.Series) -> str:
    """The unit a text column's numbers are written with ("12%", "250 ms"), or "": MIN_NUMBER_SHARE of the
    values plain numbers or numbers with that one unit, most of them with it.

    >>> written_with_unit(pl.Series(["12%", "7.5 %", "0"])), written_with_unit(pl.Series(["1st", "2nd", "3rd"]))
    ('%', '')
    >>> written_with_unit(pl.Series(["12 ms", "1.5 s", "3 ms"])), written_with_unit(pl.Series(["ok", "5 ms"]))
    ('', '')
    """
    texts = [str(v) for v in values.to_list()]
    found = [unit_number(t) for t in texts]
    counts: dict[str, int] = {}
    for reading in found:
        if reading is not None:
            counts[reading[1]] = counts.get(reading[1], 0) + 1
    if not counts:
        return ""
    unit = max(counts, key=lambda u: counts[u])
    plain = int(_numbers(pl.Series(texts, dtype=pl.Utf8)).is_not_null().sum())
    return unit if counts[unit] > plain and counts[unit] + plain >= MIN_NUMBER_SHARE * len(texts) else ""


def zoneless(value: Any, unit: str) -> bool:
    """Whether a time written as text carries no zone or offset (epoch numbers are UTC by definition).

    >>> zoneless("2014-02-01 10:00", "iso"), zoneless("2014-02-01T10:00+01:00", "iso"), zoneless("1391248800", "s")
    (True, False, False)
    >>> zoneless("31/12/2014 23:05", "%d/%m/%Y %H:%M"), zoneless("2014-02-01", "iso"), zoneless("2014-02-01 10:00 UTC", "iso")
    (True, False, False)
    >>> zoneless("45292.5", "excel"), zoneless("45292", "excel")
    (True, False)
    """
    if unit == "excel":  # a spreadsheet's local time of day, if any
        return float(value) % 1 != 0
    if unit != "iso" and not unit.startswith("%"):
        return False
    text = str(value).strip()
    # A date alone is a day, whatever the zone: saying so would be noise.
    return (":" in text or "%H" in unit) and not (names_zone(text) or "%z" in unit)


def values_share(column: pl.Series) -> float:
    """The share of the present values that are numbers.

    >>> values_share(pl.Series(["1", "2", "error", None]))
    0.6666666666666666
    """
    present = column.drop_nulls()
    return int(_numbers(present).is_not_null().sum()) / present.len() if present.len() else 0.0


def _not_a_number(column: pl.Series) -> Any:
    """The first present value of `column` that does not read as a number."""
    present = column.drop_nulls()
    return present.filter(_numbers(present).is_null()).head(1).to_list()[0]


# Last words of a column name that say it numbers or identifies rows ("id", "request_id", "requestId", "seq").
IDENTIFIER_WORDS = frozenset({"id", "idx", "index", "seq", "seqno", "sequence", "row", "rownum", "key", "uuid"})
# Last words of a column name that say its whole numbers are codes (HTTP status 200/404/500), labels to count.
CODE_WORDS = frozenset({"status", "code"})
# Why a column holding one value is not a feature: nothing can change in it.
CONSTANT = "one value throughout"
# How the reasons end that set a column aside for its steps alone.
BY_SHAPE = "from row to row"
# Names the reader or a spreadsheet gives a column whose header cell is empty (pandas' index: ",timestamp,value").
UNNAMED = re.compile(r"(column_\d+|unnamed: ?\d+|index|)")
# Strictly increasing whole numbers skipping at most this share of the values between their first and last
# are numbers given to the rows (ids of a table some rows were deleted from), not a measurement.
MAX_SKIPPED_IDS = 0.1


def name_words(name: str) -> list[str]:
    """The words of a column name, lower case, split at punctuation and camelCase.

    >>> name_words("requestId"), name_words("HTTP_Status-code"), name_words("bytes total")
    (['request', 'id'], ['http', 'status', 'code'], ['bytes', 'total'])
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def identifier_reason(name: str, numbers: pl.Series, first: bool) -> str:
    """Why a numeric column numbers or identifies the rows rather than measures something, or "".

    Only distinct whole numbers can be such a column, and then when one of these holds:
    - it is the file's first column and has no name (pandas writes its index so): "an unnamed first column";
    - its name ends in a word like id, index, seq or row: "named like an identifier";
    - it steps by one constant amount from row to row (0, 1, 2, ... or 2e9, 2e9 + 1000, ...): such a column is
      the row number scaled, holding nothing the row order does not;
    - it rises strictly, skipping few values (MAX_SKIPPED_IDS) between its first and last: the ids of a
      table some rows were deleted from.
    A counter (bytes_total) rises by irregular, mostly larger steps, and may stand still: a metric.

    >>> identifier_reason("seq", pl.Series([3.0, 1.0, 2.0]), False), identifier_reason("column_1", pl.Series([0.0, 5.0, 9.0]), True)
    ('named like an identifier', 'an unnamed first column')
    >>> identifier_reason("n", pl.Series([10.0, 20.0, 30.0]), False), identifier_reason("n", pl.Series([i for i in range(22) if i != 11]), False)
    ('a constant step from row to row', 'strictly increasing, few values skipped from row to row')
    >>> identifier_reason("bytes_total", pl.Series([100.0, 1350.0, 1350.0, 4000.0]), False), identifier_reason("id", pl.Series([1.5, 2.5]), False)
    ('', '')
    """
    n = numbers.len()
    if n < 2 or bool((numbers % 1 != 0).any()) or numbers.n_unique() < n:
        return ""
    if first and UNNAMED.fullmatch(name.strip().lower()):
        return "an unnamed first column"
    words = name_words(name)
    if words and words[-1] in IDENTIFIER_WORDS:
        return "named like an identifier"
    if n < 3:
        return ""
    steps = numbers.diff().drop_nulls()
    if steps.n_unique() == 1:
        return f"a constant step {BY_SHAPE}"
    span = float(numbers.max()) - float(numbers.min())  # type: ignore[arg-type]
    if bool((steps > 0).all()) and span <= (1 + MAX_SKIPPED_IDS) * (n - 1):
        return f"strictly increasing, few values skipped {BY_SHAPE}"
    return ""


def code_column(name: str, numbers: pl.Series) -> bool:
    """Whether a numeric column holds codes (a `status` of 200, 404, 500): named so, whole numbers, and few
    distinct ones. Their mean means nothing; counted per value, a burst of errors shows.

    >>> code_column("status", pl.Series([200.0, 404.0, 200.0])), code_column("status", pl.Series([0.5, 1.0]))
    (True, False)
    """
    words = name_words(name)
    return (bool(words) and words[-1] in CODE_WORDS and not bool((numbers % 1 != 0).any())
            and numbers.n_unique() <= min(MAX_CATEGORIES, max(2, numbers.len() // 10)))


# Text a column of true/false values holds (lower case).
BOOLEAN_TEXTS = frozenset({"true", "false"})


def boolean_column(values: pl.Series) -> bool:
    """Whether a column holds true/false values only (Parquet booleans, or the text true/false in any case).

    >>> boolean_column(pl.Series(["True", "false"])), boolean_column(pl.Series([True])), boolean_column(pl.Series(["yes"]))
    (True, True, False)
    """
    if values.dtype == pl.Boolean:
        return True
    return values.dtype == pl.Utf8 and set(values.str.strip_chars().str.to_lowercase().unique().to_list()) <= BOOLEAN_TEXTS


def profile_files(paths: list[Path], time_field: str | None) -> tuple[list[FileProfile], list[str]]:
    """The profiles of the files that can be analysed, and why each other file cannot.

    One bad file does not stop the others; with no usable file at all, the error names every file.
    """
    taken: set[str] = set()
    profiles, rejected = [], []
    # A file named twice (t/q.csv, t/./q.csv, a link to it) is one stream, read once.
    given: dict[Path, list[Path]] = {}
    for path in paths:
        given.setdefault(path.resolve(), []).append(path)
    for path, *again in given.values():
        try:
            profiles.append(replace(profile_file(path, time_field, taken), given=1 + len(again)))
        except AnalyzeError as exc:
            rejected.append(str(exc))
    if not profiles:
        raise AnalyzeError("no file can be analysed:\n  " + "\n  ".join(rejected))
    return profiles, rejected


@dataclass(frozen=True)
class AnalysisPlan:
    profiles: list[FileProfile]
    interval_minutes: int
    start: datetime
    end: datetime
    max_windows_per_run: int
    # Files left out, each with the reason (file name first).
    rejected: list[str] = field(default_factory=list)
    # The windows [start, end) that hold data, one span per cluster of files overlapping in time; the
    # partition range [start, end) covers them all, the runs only these.
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return sum(self._windows(a, b) for a, b in self.spans)

    @property
    def runs(self) -> int:
        return sum(-(-self._windows(a, b) // self.max_windows_per_run) for a, b in self.spans)

    def _windows(self, start: datetime, end: datetime) -> int:
        return int((end - start) / timedelta(minutes=self.interval_minutes))


def time_clusters(profiles: list[FileProfile]) -> list[tuple[datetime, datetime]]:
    """The (first, last) event time of each group of files whose stretches of data overlap, in time order.

    >>> t, day = datetime(2014, 1, 1, tzinfo=UTC), timedelta(days=1)
    >>> p = [FileProfile(Path(n), n, "csv", 2, "t", "iso", t + a * day, t + b * day, 60, False, 0, ["v"], [])
    ...      for n, a, b in (("a", 0, 1), ("c", 400, 401), ("b", 0.5, 2))]
    >>> [(str(a.date()), str(b.date())) for a, b in time_clusters(p)]
    [('2014-01-01', '2014-01-03'), ('2015-02-05', '2015-02-06')]
    """
    clusters: list[tuple[datetime, datetime]] = []
    for first, last in sorted(run for p in profiles for run in p.stretches or [(p.first, p.last)]):
        if clusters and first <= clusters[-1][1]:
            clusters[-1] = (clusters[-1][0], max(clusters[-1][1], last))
        else:
            clusters.append((first, last))
    return clusters


def plan_analysis(profiles: list[FileProfile], rejected: list[str] | None = None) -> AnalysisPlan:
    clusters = time_clusters(profiles)
    first, last = clusters[0][0], clusters[-1][1]
    minutes = window_minutes([p.bar_seconds for p in profiles], max(b - a for a, b in clusters), last - first)
    window = timedelta(minutes=minutes)
    spans: list[tuple[datetime, datetime]] = []
    for a, b in clusters:
        span = (_floor(a, window), _floor(b, window) + window)
        if spans and span[0] <= spans[-1][1]:  # clusters apart by less than a window share their windows
            span = (spans.pop()[0], span[1])
        spans.append(span)
    longest = max(int((b - a) / window) for a, b in spans)
    # As few runs as the events allow: each Dagster run costs seconds whatever it holds.
    # A file holds no more events in a window than it has rows (a second of 1,000 rows in hour windows: 1,000).
    # Each series of a long-format file holds a row at each time.
    events_per_window = sum(min(window.total_seconds() / (p.interval_s or 1.0) * max(1, len(p.series)), p.rows)
                            for p in profiles)
    per_run = max(1, min(int(MAX_EVENTS_PER_RUN / events_per_window), longest))
    return AnalysisPlan(profiles, minutes, spans[0][0], spans[-1][1], per_run, list(rejected or []), spans)


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts - epoch) // step) * step


def feature_columns(profile: FileProfile) -> list[str]:
    return sorted(f"{name}_{stat}" for name in profile.numeric for stat in DEFAULT_STATS)


def stream_pattern(profile: FileProfile) -> str:
    """The streams of a file as a detector names them: its source, or each of its series (`<source>:*`)."""
    return f"{StreamId.key_prefix(profile.source)}*" if profile.stream_key else profile.source


def resolve_detectors(template: dict[str, Any], profiles: list[FileProfile]) -> dict[str, Any]:
    """The default detector set with its feature globs resolved against each stream's columns.

    Streams with the same resolved features share one entry; a detector whose globs
    match nothing on a stream does not run there.
    """
    detectors = []
    for spec in template.get("detectors", []):
        globs = spec.get("features") or []
        by_features: dict[tuple[str, ...], list[str]] = {}
        for profile in profiles:
            columns = feature_columns(profile)
            matched = sorted({c for c in columns for g in globs if fnmatchcase(c, g)}) if globs else []
            if matched or not globs:
                by_features.setdefault(tuple(matched), []).append(stream_pattern(profile))
        for index, (features, streams) in enumerate(sorted(by_features.items())):
            entry = {**spec, "streams": sorted(streams)}
            if globs:
                entry["features"] = list(features)
            if index:
                entry["name"] = f"{spec['name']}_{index + 1}"
            detectors.append(entry)
    return {**template, "detectors": detectors}


def write_config(plan: AnalysisPlan, directory: Path, data_dir: Path, cards_from: Path | None) -> list[Path]:
    """The configuration folder for the plan; returns the files written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalyzeError(f"{directory}: cannot create the configuration folder: {exc}") from None
    qraft: dict[str, Any] = {
        "data_dir": str(data_dir.resolve()),
        "partitions": {
            "interval_minutes": plan.interval_minutes,
            "start": plan.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": plan.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            # The files are complete: a window is closed once nothing more lands.
            "allowed_lateness_s": 0,
            "max_partitions": max(MAX_PARTITIONS, int((plan.end - plan.start) / timedelta(minutes=plan.interval_minutes))),
            "max_windows_per_run": plan.max_windows_per_run,
        },
        "lander": {"metrics_port": 0},
        # A card's context shows a few bars either side of the finding.
        "explain": {"context_minutes": max(5, -(-CONTEXT_BARS * max(p.bar_seconds for p in plan.profiles) // 60))},
        # A trial run records no MLflow experiment; turn on to keep detector runs.
        "mlflow": {"enabled": False},
    }
    ahead = max(p.last for p in plan.profiles) - datetime.now(UTC)
    if ahead > timedelta(seconds=CleanConfig().max_future_s):
        # Data dated in the future (a simulation, a forecast, a clock set to 2100) is what the user has:
        # cleaning must not reject it as a broken clock. A day of slack for a re-run later.
        qraft["clean"] = {"max_future_s": int(ahead.total_seconds()) + 86400}
    sources = {"sources": [
        {"name": p.source, "type": "file", "endpoint": str(p.path), "parser": "generic",
         "description": f"{p.path.name}: {p.rows} rows, one every {p.interval_s:g}s (inferred by qraft analyze)",
         "options": {"format": p.format, "time_field": p.time_field,
                     **({"time_of_day_field": p.time_of_day_field} if p.time_of_day_field else {}),
                     **({"encoding": p.encoding} if p.encoding != "utf-8" else {}),
                     **({"time_format": p.time_unit} if p.time_unit.startswith("%") else {"time_unit": p.time_unit}),
                     "event_type": EVENT_TYPE, **({"delimiter": p.delimiter} if p.delimiter else {}),
                     **({"flatten": True} if p.flatten else {}),
                     **({"thousands": p.thousands} if p.thousands else {}),
                     **({"decimal_comma": p.decimal_comma} if p.decimal_comma else {}),
                     **({"units": p.units} if p.units else {}),
                     **({"booleans": p.booleans} if p.booleans else {})}}
        for p in plan.profiles
    ]}
    preprocessing = {"preprocessing": {
        "bar_seconds": min(p.bar_seconds for p in plan.profiles),
        "pipeline_by_source": [
            {"source": p.source, "event_type": EVENT_TYPE, "bar_seconds": p.bar_seconds,
             **({"stream_key": p.stream_key} if p.stream_key else {}),
             "operators": [{"aggregate": {
                 "method": "stats", "fields": p.numeric,
                 **({"categorical": p.categorical} if p.categorical else {}),
             }}]}
            for p in plan.profiles
        ],
    }}
    template = yaml.safe_load(DEFAULT_DETECTORS.read_text())
    detectors = resolve_detectors(template, plan.profiles)
    written = []
    for name, content, note in (
        ("qraft.yaml", qraft, "Inferred by `qraft analyze` from the data; edit freely."),
        ("sources.yaml", sources, "One file source per analysed file; each is its own stream, or its series are."),
        ("preprocessing.yaml", preprocessing, "Per-field bar statistics; bar size from each file's sampling interval."),
        ("detectors.yaml", detectors, "The default detector set, features resolved for these streams."),
    ):
        path = directory / name
        path.write_text(f"# {note}\n" + yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
        written.append(path)
    if cards_from is not None and cards_from.exists():
        written.append(Path(shutil.copyfile(cards_from, directory / "cards.yaml")))
    return written


def describe_plan(plan: AnalysisPlan) -> list[str]:
    """One line per file and one for the windows: what was inferred."""
    lines = []
    names = [p.path.name for p in plan.profiles]
    for p in plan.profiles:
        shown = p.path.name if names.count(p.path.name) == 1 else str(p.path)  # files of one name in two folders
        notes = [n for n, on in ((f"given {'twice' if p.given == 2 else f'{p.given} times'}: read once", p.given > 1),
                                 ("times without a zone, read as UTC", p.zoneless), ("irregular sampling", p.irregular),
                                 (f"{p.gaps} gap(s)", p.gaps > 0),
                                 (f"{p.malformed} malformed record(s) go to dead letters, the first because "
                                  f"{p.first_malformed}", p.malformed > 0)) if on]
        if p.swapped_format:
            notes.append(f"day and month could be either way round: read as {p.time_unit}; if they are "
                         f"{p.swapped_format}, set time_format to that in sources.yaml")
        notes += [f"{name} read without its unit {unit!r}" for name, unit in p.units.items()]
        notes += [f"{name} read as 1 (true) and 0 (false)" for name in p.booleans]
        if p.stream_key:
            notes.append(f"{len(p.series)} series told apart by {p.stream_key!r} ({', '.join(p.series[:5])}"
                         f"{', ...' if len(p.series) > 5 else ''}), each its own stream: stream_key in preprocessing.yaml")
        if _floor(p.first, timedelta(seconds=p.bar_seconds)) == _floor(p.last, timedelta(seconds=p.bar_seconds)):
            notes.append(f"the whole file fits in one bar of {_duration(p.bar_seconds)}: nothing can be found in a "
                         "single bar")
        notes += p.notes
        notes += [f"{count} text value(s) of {name} left out of the bar statistics" for name, count in p.texts.items()]
        notes += [f"{count} value(s) of {name} infinite or beyond {LARGEST_VALUE:g} in size left out of the bar statistics"
                  for name, count in p.oversize.items()]
        lines.append(
            f"  {shown} → {streams_of(p)}: {p.rows} rows {p.first:%Y-%m-%d %H:%M} .. {p.last:%Y-%m-%d %H:%M}, "
            f"time column {p.time_field!r}" + (f" + {p.time_of_day_field!r}" if p.time_of_day_field else "")
            + f" ({p.time_unit}), one every {_duration(p.interval_s)}"
            + (f" ({', '.join(notes)})" if notes else "")
            + f"; bars of {_duration(p.bar_seconds)}; fields {', '.join(p.numeric + p.categorical)}"
            + (f"; kept in the payload only: {', '.join(aside)}" if (aside := p.ignored + [
                f"{name} ({why})" for name, why in p.set_aside.items()]) else "")
        )
    lines += [f"  left out: {reason}" for reason in plan.rejected]
    spans = f" over {len(plan.spans)} time spans (the windows between them hold no data)" if len(plan.spans) > 1 else ""
    lines.append(f"  {plan.windows} windows of {plan.interval_minutes} min in {plan.runs} run(s){spans}")
    return lines


def streams_of(profile: FileProfile) -> str:
    """
    >>> p = FileProfile(Path("h.csv"), "h", "csv", 2, "t", "iso", datetime.now(UTC), datetime.now(UTC), 1, False, 0, [], [])
    >>> streams_of(p), streams_of(replace(p, stream_key="host"))
    ('stream h', 'streams h:<host>')
    """
    return f"streams {StreamId.key_prefix(profile.source)}<{profile.stream_key}>" if profile.stream_key else f"stream {profile.source}"


def _duration(seconds: float) -> str:
    """
    >>> [_duration(s) for s in (1, 90, 300, 7200, 86400, 1.5)]
    ['1s', '90s', '5min', '2h', '1d', '1.5s']
    """
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def infer_config(paths: list[Path], time_field: str | None, directory: Path, data_dir: Path,
                 cards_from: Path | None = None) -> AnalysisPlan:
    """Profile the files, plan the windows and write the configuration folder."""
    if not paths:
        raise AnalyzeError("no files given")
    plan = plan_analysis(*profile_files(paths, time_field))
    write_config(plan, directory, data_dir, cards_from)
    return plan


def finding_rows(patterns: list[Any]) -> list[dict[str, Any]]:
    """Pattern events as the plain objects `qraft analyze --json` prints."""
    return [
        {
            "pattern_id": p.pattern_id,
            "type": p.type.value,
            "timestamp": p.timestamp.isoformat().replace("+00:00", "Z"),
            "source_streams": p.source_streams,
            "confidence": p.confidence,
            "cross_validated": p.cross_validated,
            "algorithm": p.algorithm.name,
            "metric_changes": p.details.metric_changes,
            "change_point": p.details.change_point,
        }
        for p in patterns
    ]
