"""`qraft analyze` infers which columns are metrics, which the time, and says what it cannot watch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from qraft_core import analyze
from qraft_core.adapters.file import FileOptions, read_records
from qraft_core.adapters.parsers import GenericOptions, generic_parser
from qraft_core.analyze import (
    AnalyzeError,
    FileProfile,
    describe_plan,
    feature_columns,
    find_time_column,
    plan_analysis,
    profile_file,
    write_config,
)
from qraft_core.config import load_sources
from qraft_core.detectors.config import load_detectors
from qraft_core.operators.pipeline import load_preprocessing

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(f"{row}\n" for row in rows))
    return path


def values(n: int = 200) -> list[float]:
    rng = random.Random(1)
    return [round(50 + rng.gauss(0, 1), 3) for _ in range(n)]


def test_an_unnamed_first_column_the_pandas_index_is_kept_in_the_payload_only(tmp_path: Path) -> None:
    path = csv(tmp_path / "p.csv", ",timestamp,value", [f"{i},{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{v}"
                                                         for i, v in enumerate(values())])
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.set_aside) == (
        ["value"], {"column_1": "a row number/identifier: an unnamed first column"})
    assert feature_columns(profile) == sorted(f"value_{stat}" for stat in ("last", "max", "mean", "min", "std"))
    assert describe_plan(plan_analysis([profile]))[0].endswith(
        "; fields value; kept in the payload only: column_1 (a row number/identifier: an unnamed first column)")


def test_ids_row_numbers_and_constants_are_not_metrics_but_a_counter_and_codes_are_read(tmp_path: Path) -> None:
    rng = random.Random(2)
    counter = [sum(rng.randint(0, 5000) for _ in range(i)) for i in range(200)]  # stands still now and then
    shuffled_ids = rng.sample(range(10_000, 90_000), 200)
    rows = [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{v},{i},{shuffled_ids[i]},{2_000_000_000 + 1000 * i},"
            f"{1000 + i + i // 50},7,{counter[i]},{rng.choice([200, 200, 404, 500])}"
            for i, v in enumerate(values())]
    header = "timestamp,value,seq,request_id,stepped,numbered,const,bytes_total,status"
    profile = profile_file(csv(tmp_path / "m.csv", header, rows), None, set())
    assert profile.set_aside == {
        "seq": "a row number/identifier: named like an identifier",
        "request_id": "a row number/identifier: named like an identifier",
        "stepped": "a row number/identifier: a constant step from row to row",
        "numbered": "a row number/identifier: strictly increasing, few values skipped from row to row",
        "const": "one value throughout: 7",
    }
    # A counter rising by irregular steps is a metric; status codes are labels, counted per value.
    assert (profile.numeric, profile.categorical) == (["value", "bytes_total"], ["status"])


def test_a_file_of_nothing_but_a_constant_column_still_watches_it_but_never_a_row_number(tmp_path: Path) -> None:
    profile = profile_file(csv(tmp_path / "flat.csv", "timestamp,value",
                               [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},5" for i in range(50)]), None, set())
    assert (profile.numeric, profile.set_aside, profile.notes) == (
        ["value"], {}, ["value (one value throughout: 5) watched all the same: the file has no other column"])
    # A ramp alone is watched too (a tried-out file), with the reason it would otherwise not be.
    ramp = profile_file(csv(tmp_path / "ramp.csv", "timestamp,value",
                            [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{i - 5}" for i in range(50)]), None, set())
    assert (ramp.numeric, ramp.set_aside, ramp.notes) == (["value"], {}, [
        "value (a row number/identifier: a constant step from row to row) watched all the same: the file has no "
        "other column"])
    # Row numbers named so or unnamed are never watched: with nothing else, the file is not analysed, and the error says why.
    path = csv(tmp_path / "ids.csv", "timestamp,seq", [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{i}" for i in range(50)])
    with pytest.raises(AnalyzeError) as error:
        profile_file(path, None, set())
    assert str(error.value) == (f"{path}: no numeric or categorical column besides the time column 'timestamp'; "
                                "'seq' is a row number/identifier: named like an identifier")


def test_a_column_of_dates_is_the_time_rather_than_a_counter_that_reads_as_epoch_seconds() -> None:
    frame = pl.DataFrame({"bytes_total": [str(2_000_000_000 + 1000 * i) for i in range(20)],
                          "when": [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ}" for i in range(20)],
                          "value": [str(v) for v in values(20)]})
    assert find_time_column(frame, Path("c.csv"), None) == ("when", "iso", "")
    assert find_time_column(frame.rename({"when": "seen"}), Path("c.csv"), None) == (
        "seen", "iso", "bytes_total also reads as epoch times but is a bare number: 'seen' is the time")
    # With no other candidate, the bare numbers are the time, and the plan says why.
    assert find_time_column(frame.drop("when"), Path("c.csv"), None) == (
        "bytes_total", "s", "time column 'bytes_total': its numbers read as epoch times (s), and no column holds "
        "dates; if it is not the time, name that with --time-field")
    # Numbers in a column named like a time (a duration: response_time) come after a column of dates.
    durations = frame.rename({"bytes_total": "response_time", "when": "seen"})
    assert find_time_column(durations, Path("c.csv"), None)[:2] == ("seen", "iso")


def test_true_false_columns_are_read_as_one_and_zero(tmp_path: Path) -> None:
    path = csv(tmp_path / "up.csv", "timestamp,up", [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{'True' if i < 30 else 'false'}"
                                                     for i in range(50)])
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.booleans, profile.categorical) == (["up"], ["up"], [])
    assert "up read as 1 (true) and 0 (false)" in describe_plan(plan_analysis([profile]))[0]
    parse = generic_parser(GenericOptions(time_field="timestamp", booleans=["up"]), "up")
    assert [parse({"timestamp": "2024-03-01T00:00:00Z", "up": v}, "x").payload["up"] for v in ("True", "false", False)] == [
        1, 0, 0]


def test_a_stream_of_categorical_columns_only_is_said_to_have_no_detector(tmp_path: Path) -> None:
    rows = [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{'51ms' if i % 2 else '0.049s'}" for i in range(50)]
    profile = profile_file(csv(tmp_path / "lat.csv", "timestamp,latency", rows), None, set())
    assert (profile.numeric, profile.categorical) == ([], ["latency"])
    assert profile.notes == ["no detector watches stream lat: its columns are categorical (latency), counted per bar; "
                             "latency holds numbers in several units (s, ms): write them in one to have them read "
                             "as numbers"]


def test_an_hour_column_next_to_a_date_completes_the_time(tmp_path: Path) -> None:
    hours = [T0 + timedelta(hours=i) for i in range(72)]
    path = csv(tmp_path / "dh.csv", "date,hour,value", [f"{t:%Y-%m-%d},{t.hour},{v}" for t, v in zip(hours, values(72),
                                                                                                       strict=True)])
    profile = profile_file(path, None, set())
    assert (profile.time_field, profile.time_of_day_field, profile.time_unit, profile.interval_s, profile.last) == (
        "date", "hour", "%Y-%m-%d %H", 3600.0, T0 + timedelta(hours=71))
    assert (profile.numeric, profile.notes) == (["value"], [])


def test_many_rows_at_one_time_with_no_column_telling_them_apart_are_said(tmp_path: Path) -> None:
    rows = [f"{T0 + timedelta(days=i // 24):%Y-%m-%d},{(i * 7) % 24},{v}" for i, v in enumerate(values(72))]
    profile = profile_file(csv(tmp_path / "d.csv", "date,slot,value", rows), None, set())
    assert (profile.time_field, profile.time_of_day_field, profile.interval_s) == ("date", "", 86400.0)
    assert profile.notes == ["24 rows share each time (the median) and no column tells them apart: the bars pool "
                             "them; if another column holds part of the time, name it as time_of_day_field in sources.yaml"]


def profile(name: str, rows: int, first: datetime, last: datetime, interval_s: float) -> FileProfile:
    return FileProfile(Path(f"{name}.csv"), name, "csv", rows, "timestamp", "iso", first, last, interval_s, False, 0,
                       ["value"], [])


def test_a_dense_file_holds_no_more_events_per_window_than_its_rows() -> None:
    # 1,000 rows within a second next to a sparse file of 329 daily windows.
    dense = profile("dense", 1000, T0, T0 + timedelta(seconds=0.999), 0.001)
    sparse = profile("sparse", 10, T0, T0 + timedelta(days=328.5), 36.5 * 86400)
    plan = plan_analysis([dense, sparse])
    assert (plan.interval_minutes, plan.windows, plan.max_windows_per_run, plan.runs) == (1440, 329, 329, 1)


def test_a_file_within_one_bar_is_said_to_show_nothing() -> None:
    dense = profile("dense", 1000, T0, T0 + timedelta(seconds=0.999), 0.001)
    assert describe_plan(plan_analysis([dense]))[0] == (
        "  dense.csv → stream dense: 1000 rows 2024-03-01 00:00 .. 2024-03-01 00:00, time column 'timestamp' (iso), "
        "one every 0.001s (the whole file fits in one bar of 1s: nothing can be found in a single bar); bars of 1s; "
        "fields value")


@pytest.mark.parametrize(("written", "unit"), [
    ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M %p"),
    ("%Y-%m-%d %I:%M:%S %p", "%Y-%m-%d %I:%M:%S %p"),
])
def test_twelve_hour_times_are_read(tmp_path: Path, written: str, unit: str) -> None:
    rows = [f"{T0 + timedelta(minutes=7) * i:{written}},{v}" for i, v in enumerate(values(300))]
    profile = profile_file(csv(tmp_path / "ampm.csv", "time,value", rows), None, set())
    assert (profile.time_field, profile.time_unit, profile.first, profile.last, profile.interval_s) == (
        "time", unit, T0, T0 + timedelta(minutes=7 * 299), 420.0)
    # Day and month cannot be the other way round in a date written year first.
    assert profile.swapped_format == ("%d/%m/%Y %I:%M %p" if unit.startswith("%m") else "")


def test_a_named_time_column_that_does_not_read_lists_the_formats_tried(tmp_path: Path) -> None:
    path = csv(tmp_path / "x.csv", "when,value", [f"1st of March {i},1" for i in range(5)])
    with pytest.raises(AnalyzeError) as error:
        profile_file(path, "when", set())
    assert str(error.value) == (
        f"{path}: column 'when' does not hold ISO 8601 times, epoch numbers (s, ms, us, ns) or spreadsheet serial "
        "dates, nor dates written %d/%m/%Y, %m/%d/%Y, %d.%m.%Y, %d-%m-%Y, %m-%d-%Y, %Y/%m/%d, %Y-%m-%d, alone or "
        "followed by a time of day %H:%M, %H:%M:%S, %H:%M:%S.%f, %I:%M %p, %I:%M:%S %p (e.g. '1st of March 0' "
        "is not one of them)")


def test_random_large_numbers_are_not_epoch_times(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = csv(tmp_path / "bytes.csv", "bytes,value", [f"{rng.randint(1_000_000_000, 2_000_000_000)},{v}"
                                                       for v in values()])
    with pytest.raises(AnalyzeError) as error:
        profile_file(path, None, set())
    assert str(error.value).startswith(f"{path}: no column holds times")


def replayed(profiles: list[FileProfile], folder: Path) -> dict[str, list[datetime]]:
    """The event times the file sources of the written configuration read, by source."""
    write_config(plan_analysis(profiles), folder / "config", folder / "data", REPO / "config" / "cards.yaml")
    times: dict[str, list[datetime]] = {}
    for source in load_sources(folder / "config").sources:
        options = FileOptions(**source.options)
        parse = generic_parser(options, source.name)
        records = read_records(Path(source.endpoint), options.format, [], delimiter=options.delimiter,
                               encoding=options.encoding)
        times[source.name] = [parse(record, "x").timestamp for record, _, _ in records if record is not None]
    return times


@pytest.mark.parametrize(("header", "written", "step", "unit"), [
    ("date", "%Y%m%d", timedelta(days=1), "%Y%m%d"),
    ("timestamp", "%Y%m%d", timedelta(days=1), "%Y%m%d"),
    ("time", "%Y%m%d%H%M%S", FIVE, "%Y%m%d%H%M%S"),
    ("year", "%Y", timedelta(days=366), "%Y"),
])
def test_whole_numbers_written_as_dates_are_dates_not_epoch_seconds(tmp_path: Path, header: str, written: str,
                                                                      step: timedelta, unit: str) -> None:
    stamps = [T0 + step * i for i in range(120)]
    path = csv(tmp_path / "d.csv", f"{header},value", [f"{t:{written}},{v}" for t, v in zip(stamps, values(120),
                                                                                             strict=True)])
    profile = profile_file(path, None, set())
    first, last = (datetime.strptime(f"{t:{written}}", written).replace(tzinfo=UTC) for t in (stamps[0], stamps[-1]))
    assert (profile.time_field, profile.time_unit, profile.first, profile.last, profile.numeric) == (
        header, unit, first, last, ["value"])
    times = replayed([profile], tmp_path)["d"]
    assert (len(times), min(times), max(times)) == (120, first, last)


def long_rows(extra: str = "") -> list[str]:
    """Three hosts at levels 10, 60 and 110 every 5 minutes; db1 stops after 40 times."""
    rng = random.Random(4)
    return [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{host},{level + rng.gauss(0, 1):.3f}{extra.format(i=i, host=host)}"
            for i in range(100) for host, level in (("web1", 10), ("web2", 60), ("db1", 110)) if host != "db1" or i < 40]


def test_a_long_format_file_is_split_into_one_stream_per_series(tmp_path: Path) -> None:
    path = csv(tmp_path / "long.csv", "timestamp,host,value", long_rows())
    profile = profile_file(path, None, set())
    assert (profile.stream_key, profile.series, profile.numeric, profile.categorical, profile.interval_s, profile.notes) == (
        "host", ["web1", "web2", "db1"], ["value"], [], 300.0, [])
    assert describe_plan(plan_analysis([profile]))[0].startswith(
        "  long.csv → streams long:<host>: 240 rows 2024-03-01 00:00 .. 2024-03-01 08:15, time column 'timestamp' (iso), "
        "one every 5min (3 series told apart by 'host' (web1, web2, db1), each its own stream: stream_key in "
        "preprocessing.yaml)")
    folder = tmp_path / "out"
    assert len(replayed([profile], folder)["long"]) == 240
    preprocessing = load_preprocessing(folder / "config")
    assert [(p.source, p.stream_key) for p in preprocessing.pipeline_by_source] == [("long", "host")]
    detectors = load_detectors(folder / "config").detectors
    assert {tuple(d.streams) for d in detectors} == {("long:*",)}


def test_free_text_and_ids_do_not_split_a_file_into_streams(tmp_path: Path) -> None:
    # A request id per row and a free-text message tell the rows at one time apart too, but name no series.
    ids = csv(tmp_path / "ids.csv", "timestamp,host,value,request", long_rows(",r{i}-{host}"))
    profile = profile_file(ids, None, set())
    assert (profile.stream_key, profile.categorical) == ("host", [])
    # Two rows a time, told apart only by free text and ids; a status label repeats within a time.
    rng = random.Random(5)
    rows = [f"{T0 + FIVE * (i // 2):%Y-%m-%dT%H:%M:%SZ},{v},message number {i},r{i},{rng.choice(['ok', 'ok', 'warn'])}"
            for i, v in enumerate(values(200))]
    texts = profile_file(csv(tmp_path / "texts.csv", "timestamp,value,message,request,level", rows), None, set())
    assert (texts.stream_key, texts.series, texts.categorical, texts.ignored) == ("", [], ["level"], ["message", "request"])


def test_a_large_file_is_profiled_from_a_bounded_sample_with_exact_counts_and_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(analyze, "BLOCK_ROWS", 50)
    # 10,000 rows every 5 minutes with a 20-day gap after row 6,000, three rows of the wrong width and a row number.
    stamps = [T0 + FIVE * i + (timedelta(days=20) if i >= 6000 else timedelta(0)) for i in range(10_000)]
    rows = [f"{t:%Y-%m-%dT%H:%M:%SZ},{i},{v}" for i, (t, v) in enumerate(zip(stamps, values(10_000), strict=True))]
    for at in (10, 5000, 9000):
        rows.insert(at, "oops")
    path = csv(tmp_path / "big.csv", "timestamp,n,value", rows)
    table = analyze.read_table(path)
    assert (table.frame.height, table.height, table.malformed) == (200, 10_000, 3)
    profile = profile_file(path, None, set())
    assert (profile.rows, profile.malformed, profile.first, profile.last, profile.interval_s, profile.numeric,
            profile.set_aside) == (10_000, 3, stamps[0], stamps[-1], 300.0, ["value"],
                                   {"n": "a row number/identifier: a constant step from row to row"})
    assert profile.stretches == [(stamps[0], stamps[5999]), (stamps[6000], stamps[-1])]
    assert profile.notes == ["profiled from 200 of its rows spread over the file; the rows, dead letters and first "
                             "and last times counted in all of them"]


def test_a_title_line_or_excels_separator_line_above_the_header_is_named_with_what_to_do(tmp_path: Path) -> None:
    rows = [f"{T0 + FIVE * i:%Y-%m-%dT%H:%M:%SZ},{v},a" for i, v in enumerate(values(20))]
    title = csv(tmp_path / "title.csv", "Report: CPU load, generated 2024-03-05\ntimestamp,value,kind", rows)
    with pytest.raises(AnalyzeError) as error:
        profile_file(title, None, set())
    assert str(error.value) == (
        f"{title}: has no rows (21 malformed, e.g. CSV row 1 has 3 fields, the header 2): the first line, 'Report: CPU "
        "load, generated 2024-03-05', should be the header naming the columns (e.g. timestamp,value); if it is a "
        "title, delete it or start it with #")
    sep = csv(tmp_path / "sep.csv", "sep=;\ntimestamp;value", [row.rpartition(",")[0].replace(",", ";") for row in rows])
    with pytest.raises(AnalyzeError) as error:
        profile_file(sep, None, set())
    assert str(error.value) == (
        f"{sep}: the first line, 'sep=;', is Excel's separator line, not the header naming the columns (e.g. "
        "timestamp,value): delete it or start it with # (the separator is found from the header)")


def test_a_sampled_file_with_the_time_of_day_in_a_column_of_its_own_counts_every_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(analyze, "BLOCK_ROWS", 50)
    stamps = [T0 + FIVE * i for i in range(3000)]
    rows = [f"{t:%Y-%m-%d},{t:%H:%M:%S},{v}" for t, v in zip(stamps, values(3000), strict=True)]
    rows[1234] = f"{stamps[1234]:%Y-%m-%d},,1.0"  # no time of day: a dead letter
    profile = profile_file(csv(tmp_path / "split.csv", "date,time,value", rows), None, set())
    assert (profile.time_field, profile.time_of_day_field, profile.rows, profile.malformed, profile.first,
            profile.last, profile.interval_s) == ("date", "time", 3000, 1, stamps[0], stamps[-1], 300.0)
