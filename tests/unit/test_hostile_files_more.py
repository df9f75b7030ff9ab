"""More hostile files through `qraft analyze`'s inference and the file source it writes: zone names and
clock changes, leap seconds, times out of range, Excel serial dates, comment lines, ambiguous dates, a
header repeated mid-file. Each gives a profile the file source agrees with (its bad rows dead letters
with their reason), or a one-line reason naming the file."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from qraft_core.adapters.parsers import ParseError, parse_time
from qraft_core.adapters.registry import build_adapter
from qraft_core.analyze import AnalyzeError, FileProfile, describe_plan, infer_config, profile_file
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig, load_sources

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline)
    return path


def replayed(profile_dir: Path, tmp_path: Path) -> tuple[list[datetime], list[str]]:
    """The event times the written file source publishes, in order, and the reasons of its dead letters."""
    (source,) = load_sources(profile_dir).sources
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").run(bus, asyncio.Event()))
    events, dead_letters = bus.published()
    times = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in events]
    return times, [d["reason"] for d in dead_letters]


def analysed(path: Path, tmp_path: Path) -> tuple[FileProfile, list[datetime], list[str]]:
    plan = infer_config([path], None, tmp_path / "config", tmp_path / "data")
    return (plan.profiles[0], *replayed(tmp_path / "config", tmp_path))


def watched_csv(tmp_path: Path, text: str) -> tuple[list[dict], list[dict]]:
    """(events, dead letters) of one scan of a watched folder holding one CSV file of `text`."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text(text)
    source = SourceConfig(name="drop", type="watcher", endpoint=str(folder), options={"pattern": "*.csv", "time_field": "ts"})
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").scan(bus))
    return bus.published()


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-01 13:00:00 UTC", "2024-01-01T13:00:00+00:00"),
    ("2024-01-01T13:00:00.5 gmt", "2024-01-01T13:00:00.500000+00:00"),
    ("2024-07-01T13:00 Europe/Paris", "2024-07-01T11:00:00+00:00"),
    ("2024-03-10T09:00-04:00[America/New_York]", "2024-03-10T13:00:00+00:00"),
    ("2024-11-03T01:30 America/New_York", "2024-11-03T05:30:00+00:00"),  # repeated by the clock: the first
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00+00:00"),
])

def test_zone_names_and_leap_seconds_read_as_the_instant_they_name(text: str, expected: str) -> None:
    assert parse_time(text).isoformat() == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("2024-03-10T02:30 America/New_York", "2024-03-10T02:30 does not exist in America/New_York"),
    ("2024-01-01T10:00 Mars/Olympus", "Mars/Olympus is not a time zone"),
    ("9999-12-31T23:59:59-01:00", "is out of range"),
    ("0001-01-01T00:00:00+01:00", "is out of range"),
])
def test_times_that_are_no_instant_are_a_parse_error_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_time(text)


def test_a_time_beyond_the_calendar_is_one_dead_letter_not_a_failed_analysis(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}" for i in range(100)]
    rows[3] = "9999-12-31T23:59:59-01:00,1"
    profile, times, reasons = analysed(write_lines(tmp_path / "far.csv", ["time,value", *rows]), tmp_path)
    assert (profile.rows, profile.malformed, profile.last) == (100, 1, T0 + timedelta(minutes=99))
    assert len(times) == 99
    assert reasons == ["timestamp '9999-12-31T23:59:59-01:00' is not a time: 9999-12-31T23:59:59-01:00 is out of range"]


def test_local_times_with_a_zone_name_skip_the_hour_the_clock_skips(tmp_path: Path) -> None:
    """A day of minutes in New York across the spring clock change: the skipped hour's 60 rows are dead
    letters naming the zone; the rest are the instants they name."""
    start = datetime(2024, 3, 10)
    rows = [f"{(start + timedelta(minutes=i)):%Y-%m-%dT%H:%M} America/New_York,{i % 5}" for i in range(1440)]
    profile, times, reasons = analysed(write_lines(tmp_path / "ny.csv", ["time,value", *rows]), tmp_path)
    assert (profile.rows, profile.malformed, profile.zoneless) == (1440, 60, False)
    assert (profile.first, profile.last) == (datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 3, 11, 3, 59, tzinfo=UTC))
    assert len(times) == 1380
    assert len(reasons) == 60
    assert reasons[0] == ("timestamp '2024-03-10T02:00 America/New_York' is not a time: "
                          "2024-03-10T02:00 does not exist in America/New_York (its clocks skip it)")


def test_a_time_column_too_often_unreadable_says_why_its_values_are_not_times(tmp_path: Path) -> None:
    start = datetime(2024, 3, 10)
    rows = [f"{(start + timedelta(minutes=i)):%Y-%m-%dT%H:%M} America/New_York,{i % 5}" for i in range(300)]
    path = write_lines(tmp_path / "ny.csv", ["time,value", *rows])
    with pytest.raises(AnalyzeError, match=r"column 'time': only 240 of 300 rows hold a time \(e.g. "
                       r"'2024-03-10T02:00 America/New_York' does not: .* does not exist in America/New_York"):
        profile_file(path, None, set())


def test_comment_and_blank_lines_above_the_csv_header_are_not_the_header(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()};{i % 7}" for i in range(100)]
    path = write_lines(tmp_path / "logger.csv", ["", "# exported by the logger; units: ms", "#", "", "time;value", *rows],
                       newline="\r\n")
    profile, times, reasons = analysed(path, tmp_path)
    assert (profile.time_field, profile.numeric, profile.delimiter, profile.rows, profile.malformed) == (
        "time", ["value"], ";", 100, 0)
    assert (len(times), reasons) == (100, [])


def test_the_folder_watcher_takes_the_first_line_neither_blank_nor_a_comment_as_the_header(tmp_path: Path) -> None:
    events, letters = watched_csv(tmp_path, "\n# exported by the logger\nts,value\n1767571200,1\n")
    assert letters == []
    assert [e["payload"] for e in events] == [{"ts": "1767571200", "value": "1"}]


def test_spreadsheet_serial_dates_read_as_the_days_they_count(tmp_path: Path) -> None:
    """A sheet saved without its date format writes 45292.25 for 2024-01-01 06:00: not 12:34 on 1970-01-01."""
    rows = [f"{45292 + i / 24:.10f},{i % 7}" for i in range(100)]
    profile, times, reasons = analysed(write_lines(tmp_path / "sheet.csv", ["Date,value", *rows]), tmp_path)
    assert (profile.time_field, profile.time_unit, profile.interval_s, profile.zoneless) == ("Date", "excel", 3600.0, True)
    assert (profile.first, profile.last) == (T0, T0 + timedelta(hours=99))
    assert (times[:2], reasons) == ([T0, T0 + timedelta(hours=1)], [])


def test_numbers_in_the_range_of_serial_dates_are_not_times_unless_named_like_one(tmp_path: Path) -> None:
    rows = [f"2024-01-01T00:{i:02d}:00Z,{45000 + i * 0.25}" for i in range(60)]
    profile = profile_file(write_lines(tmp_path / "price.csv", ["time,price", *rows]), None, set())
    assert (profile.time_field, profile.time_unit, profile.numeric) == ("time", "iso", ["price"])
    seconds = [f"{40000 + i},{i % 3}" for i in range(60)]  # seconds since a start, named like a time
    profile = profile_file(write_lines(tmp_path / "elapsed.csv", ["time,value", *seconds]), None, set())
    assert (profile.time_unit, profile.interval_s, profile.first) == ("s", 1.0, datetime(1970, 1, 1, 11, 6, 40, tzinfo=UTC))


def test_dates_that_read_day_or_month_first_say_so_and_how_to_choose(tmp_path: Path) -> None:
    rows = [f"01/02/2024 {i // 60:02d}:{i % 60:02d},{i % 7}" for i in range(120)]
    plan = infer_config([write_lines(tmp_path / "one_day.csv", ["time,value", *rows])], None,
                        tmp_path / "config", tmp_path / "data")
    (profile,) = plan.profiles
    assert (profile.time_unit, profile.swapped_format) == ("%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M")
    assert ("day and month could be either way round: read as %d/%m/%Y %H:%M; if they are %m/%d/%Y %H:%M, "
            "set time_format to that in sources.yaml") in describe_plan(plan)[0]
    # One day above 12 anywhere settles it: nothing to say.
    rows[-1] = "13/02/2024 02:00,1"
    profile = profile_file(write_lines(tmp_path / "settled.csv", ["time,value", *rows]), None, set())
    assert (profile.time_unit, profile.swapped_format) == ("%d/%m/%Y %H:%M", "")


def test_a_header_repeated_mid_file_is_a_dead_letter_saying_so(tmp_path: Path) -> None:
    """Two exports joined end to end: the second header is no record, and the rows after it are read."""
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}" for i in range(100)]
    path = write_lines(tmp_path / "joined.csv", ["time,value", *rows[:50], "time,value", *rows[50:]])
    profile, times, reasons = analysed(path, tmp_path)
    assert (profile.rows, profile.malformed) == (100, 1)
    assert (len(times), reasons) == (100, ["CSV row 51 repeats the header line"])
    events, letters = watched_csv(tmp_path, "ts,value\n1767571200,1\nts,value\n1767571260,2\n")
    assert [e["payload"]["value"] for e in events] == ["1", "2"]
    assert [letter["reason"] for letter in letters] == ["CSV row repeats the header line"]


def test_parquet_cells_an_event_cannot_hold_cost_no_row(tmp_path: Path) -> None:
    """NaN, infinities and bytes reach the payload as the text a CSV file would hold; a date column is a time,
    a duration column is kept in the payload only, and a date beyond the store's years is that row's dead letter."""
    n = 60
    times = [datetime(2024, 1, 1) + timedelta(minutes=i) for i in range(n)]
    times[5] = datetime(9999, 12, 31)
    pl.DataFrame({
        "time": times,
        "v": [float("nan") if i % 10 == 0 else float("inf") if i == 7 else float(i % 5) for i in range(n)],
        "blob": [b"\xff\x00" if i % 2 else "é".encode() for i in range(n)],
        "took": [timedelta(seconds=i) for i in range(n)],
    }).write_parquet(tmp_path / "odd.parquet")
    profile, landed, reasons = analysed(tmp_path / "odd.parquet", tmp_path)
    assert (profile.time_field, profile.numeric, profile.categorical, profile.ignored) == ("time", ["v"], ["blob"], ["took"])
    assert (profile.rows, profile.malformed, profile.last) == (60, 1, T0 + timedelta(minutes=59))
    assert (len(landed), reasons) == (60, [])  # the 9999 row is refused where the store's range is known: landing
    pl.DataFrame({"day": [date(2024, 1, 1) + timedelta(days=i) for i in range(20)], "v": list(range(20))}).write_parquet(
        tmp_path / "days.parquet")
    days = profile_file(tmp_path / "days.parquet", None, set())
    assert (days.time_field, days.interval_s, days.first) == ("day", 86400.0, T0)


def test_parquet_values_reach_the_payload_as_text_where_an_event_cannot_hold_them(tmp_path: Path) -> None:
    pl.DataFrame({"time": [T0, T0 + timedelta(minutes=1)], "v": [float("nan"), float("-inf")],
                  "blob": [b"\xff", b"ok"]}).write_parquet(tmp_path / "odd.parquet")
    folder = tmp_path / "in"
    folder.mkdir()
    (tmp_path / "odd.parquet").rename(folder / "odd.parquet")
    source = SourceConfig(name="drop", type="watcher", endpoint=str(folder),
                          options={"pattern": "*.parquet", "time_field": "time"})
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").scan(bus))
    events, letters = bus.published()
    assert letters == []
    assert [(e["payload"]["v"], e["payload"]["blob"]) for e in events] == [("nan", "\\xff"), ("-inf", "ok")]


def test_blanks_around_csv_names_and_values_are_layout_not_content(tmp_path: Path) -> None:
    rows = [f" {(T0 + timedelta(minutes=i)).isoformat()} ,  {i % 7}.5 , h{i % 2} " for i in range(60)]
    profile, times, reasons = analysed(write_lines(tmp_path / "padded.csv", [" time , value , host ", *rows]), tmp_path)
    assert (profile.time_field, profile.numeric, profile.categorical) == ("time", ["value"], ["host"])
    assert (len(times), reasons) == (60, [])
    events, letters = watched_csv(tmp_path, "ts , value\n1767571200 , 1.5\n")
    assert ([e["payload"] for e in events], letters) == ([{"ts": "1767571200", "value": "1.5"}], [])


def test_a_quote_never_closed_is_a_dead_letter_saying_so_not_rows_silently_swallowed(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}" for i in range(100)]
    rows[60] = f'{(T0 + timedelta(minutes=60)).isoformat()},"7'
    profile, times, reasons = analysed(write_lines(tmp_path / "quote.csv", ["time,value", *rows]), tmp_path)
    assert (profile.rows, profile.malformed, len(times)) == (60, 1, 60)
    assert reasons == ["CSV row 61: unexpected end of data "
                       "(a quote opened in it is never closed: the rest of the file is in it)"]


def test_json_lines_with_a_byte_order_mark_or_bare_cr_line_ends_read_every_line(tmp_path: Path) -> None:
    lines = [json.dumps({"time": (T0 + timedelta(minutes=i)).isoformat(), "v": i % 5}) for i in range(60)]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    profile, times, reasons = analysed(tmp_path / "bom.jsonl", tmp_path)
    assert (profile.rows, profile.malformed, len(times), reasons) == (60, 0, 60, [])
    (tmp_path / "mac.jsonl").write_bytes("\r".join(lines).encode() + b"\r")
    profile, times, reasons = analysed(tmp_path / "mac.jsonl", tmp_path / "mac")
    assert (profile.rows, profile.malformed, len(times), reasons) == (60, 0, 60, [])


def test_the_plan_says_why_the_first_dead_letter_is_one(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}" for i in range(100)]
    rows[10], rows[20] = ",3", "1850-01-01T00:00:00Z,4"
    plan = infer_config([write_lines(tmp_path / "old.csv", ["time,value", *rows])], None, tmp_path / "c", tmp_path / "d")
    assert (plan.profiles[0].malformed, plan.profiles[0].first_malformed) == (
        2, "1850-01-01T00:00:00Z is outside the years 1900-2299 the store holds")
    assert ("2 malformed record(s) go to dead letters, the first because 1850-01-01T00:00:00Z is outside "
            "the years 1900-2299 the store holds") in describe_plan(plan)[0]
    rows[20] = f"{(T0 + timedelta(minutes=20)).isoformat()},4,extra"
    profile = profile_file(write_lines(tmp_path / "wide.csv", ["time,value", *rows]), None, set())
    assert (profile.malformed, profile.first_malformed) == (2, "CSV row 21 has 3 fields, the header 2")


def test_a_comment_line_mid_file_is_a_dead_letter_saying_so(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}" for i in range(60)]
    rows[30] = "# logger restarted"
    profile, times, reasons = analysed(write_lines(tmp_path / "restart.csv", ["time,value", *rows]), tmp_path)
    assert (profile.rows, profile.malformed, len(times)) == (59, 1, 59)
    assert reasons == ["CSV row 31 is a comment line"]
    events, letters = watched_csv(tmp_path, "ts,value\n1767571200,1\n# logger restarted\n")
    assert (len(events), [letter["reason"] for letter in letters]) == (1, ["CSV row is a comment line"])


def test_numbers_written_with_a_unit_are_numbers(tmp_path: Path) -> None:
    rows = [f"{(T0 + timedelta(minutes=i)).isoformat()},{i % 7}.5%,{10 * i} ms,{'n/a' if i == 3 else i % 3}"
            for i in range(60)]
    path = write_lines(tmp_path / "monitor.csv", ["time,cpu,latency,disk", *rows])
    plan = infer_config([path], None, tmp_path / "config", tmp_path / "data")
    (profile,) = plan.profiles
    assert (profile.numeric, profile.units) == (["cpu", "latency", "disk"], {"cpu": "%", "latency": "ms"})
    assert "cpu read without its unit '%', latency read without its unit 'ms'" in describe_plan(plan)[0]
    (source,) = load_sources(tmp_path / "config").sources
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").run(bus, asyncio.Event()))
    events, letters = bus.published()
    assert letters == []
    assert [(e["payload"]["cpu"], e["payload"]["latency"]) for e in events[:2]] == [(0.5, 0.0), (1.5, 10.0)]
