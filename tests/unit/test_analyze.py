"""`qraft analyze` inference: time column, sampling interval, bars, windows, fields, written config."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from qraft_core.analyze import (
    MAX_EVENTS_PER_RUN,
    AnalyzeError,
    FileProfile,
    find_time_column,
    plan_analysis,
    profile_file,
    profile_files,
    write_config,
)
from qraft_core.config import load_qraft_config, load_sources
from qraft_core.detectors.config import load_detectors
from qraft_core.operators.pipeline import load_preprocessing
from qraft_core.validation import validate_all

T0 = datetime(2014, 2, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def series(path: Path, step: timedelta, n: int, render=lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")) -> Path:
    return write_csv(path, ["timestamp", "value"],
                     [[render(T0 + step * i), (i % 7) - 3] for i in range(n)])


@pytest.mark.parametrize(
    ("render", "unit"),
    [
        (lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), "iso"),
        (lambda t: t.strftime("%Y-%m-%d %H:%M:%S"), "iso"),
        (lambda t: int(t.timestamp()), "s"),
        (lambda t: int(t.timestamp() * 1e3), "ms"),
        (lambda t: int(t.timestamp() * 1e6), "us"),
        (lambda t: int(t.timestamp() * 1e9), "ns"),
    ],
)
def test_the_time_column_and_its_unit_are_detected(tmp_path: Path, render, unit: str) -> None:
    path = write_csv(tmp_path / "m.csv", ["value", "when"],
                     [[i - 5, render(T0 + timedelta(minutes=5 * i))] for i in range(50)])
    profile = profile_file(path, None, set())
    assert (profile.time_field, profile.time_unit, profile.first, profile.interval_s) == ("when", unit, T0, 300.0)
    assert profile.numeric == ["value"]


def test_plain_numbers_are_not_mistaken_for_times(tmp_path: Path) -> None:
    frame = pl.DataFrame({"load": ["0.5", "0.7", "0.1"], "count": ["3", "1", "2"], "at": ["1", "2", "3"]})
    with pytest.raises(AnalyzeError, match="no column holds times.*--time-field"):
        find_time_column(frame.drop("at"), Path("x.csv"), None)
    # A column named like a time is read as one, even with small numbers.
    assert find_time_column(frame.rename({"at": "epoch"}), Path("x.csv"), None) == ("epoch", "s", "")


def test_a_named_time_column_must_exist_and_hold_times(tmp_path: Path) -> None:
    path = series(tmp_path / "a.csv", timedelta(minutes=1), 20)
    with pytest.raises(AnalyzeError, match=r"a.csv: no column 'ts' \(columns: timestamp, value\)"):
        profile_file(path, "ts", set())
    with pytest.raises(AnalyzeError, match="column 'value' does not hold ISO 8601 times"):
        profile_file(path, "value", set())


@pytest.mark.parametrize(
    ("step", "bar", "window_minutes"),
    [(timedelta(seconds=1), 1, 1), (timedelta(minutes=5), 300, 60), (timedelta(days=1), 86400, 1440),
     (timedelta(seconds=45), 60, 12)],
)
def test_sampling_interval_gives_bar_and_window_size(tmp_path: Path, step, bar, window_minutes) -> None:
    plan = plan_analysis(*profile_files([series(tmp_path / "s.csv", step, 400)], None))
    [profile] = plan.profiles
    assert (profile.bar_seconds, plan.interval_minutes) == (bar, window_minutes)
    assert not profile.irregular and profile.gaps == 0
    assert plan.start <= profile.first and plan.end > profile.last


def test_irregular_sampling_and_gaps_are_recognised(tmp_path: Path) -> None:
    times = [T0 + timedelta(seconds=s) for s in (0, 50, 130, 190, 250, 330, 400, 480, 530, 600)]
    times += [T0 + timedelta(hours=5, seconds=60 * i) for i in range(10)]
    path = write_csv(tmp_path / "irr.csv", ["time", "v"], [[t.isoformat(), 1] for t in times])
    profile = profile_file(path, None, set())
    assert profile.irregular and profile.gaps == 1
    assert profile.bar_seconds == 60


def test_a_long_daily_history_is_one_run_and_dense_files_are_cut_by_events(tmp_path: Path) -> None:
    # Thirty years of daily values: one run of every window, landed in batches of the default size.
    plan = plan_analysis(*profile_files([series(tmp_path / "daily.csv", timedelta(days=1), 10_958)], None))
    assert (plan.interval_minutes, plan.windows, plan.max_windows_per_run, plan.runs) == (1440, 10_958, 10_958, 1)
    write_config(plan, tmp_path / "config", tmp_path / "data", REPO / "config" / "cards.yaml")
    assert load_qraft_config(tmp_path / "config").lander.batch_size == 20_000
    minute = plan_analysis(*profile_files([series(tmp_path / "min.csv", timedelta(minutes=1), 200_000)], None))
    assert (minute.interval_minutes, minute.windows, minute.max_windows_per_run, minute.runs) == (1440, 139, 139, 1)
    # A value a second for 100 days (8.64 million events): runs of at most MAX_EVENTS_PER_RUN events.
    second = FileProfile(Path("s.csv"), "s", "csv", 8_640_000, "timestamp", "iso", T0, T0 + timedelta(days=100),
                         1.0, False, 0, ["value"], [])
    dense = plan_analysis([second])
    assert (dense.interval_minutes, dense.windows, dense.max_windows_per_run, dense.runs) == (1440, 101, 11, 10)
    assert dense.max_windows_per_run * 86_400 <= MAX_EVENTS_PER_RUN < (dense.max_windows_per_run + 1) * 86_400


def test_columns_are_split_into_numeric_categorical_and_ignored(tmp_path: Path) -> None:
    rows = [[(T0 + timedelta(minutes=i)).isoformat(), "N/A" if i == 7 else (i * 7) % 23 - 11, ["ok", "error"][i % 2],
             f"req-{i}", ""] for i in range(100)]
    profile = profile_file(write_csv(tmp_path / "m.csv", ["t", "latency", "status", "id", "empty"], rows), None, set())
    assert (profile.numeric, profile.categorical, profile.ignored) == (["latency"], ["status"], ["id", "empty"])


def test_hostile_files_give_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("timestamp,value\n")
    with pytest.raises(AnalyzeError, match="empty.csv: has no rows"):
        profile_file(tmp_path / "empty.csv", None, set())
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(AnalyzeError, match="cannot tell the format"):
        profile_file(tmp_path / "x.txt", None, set())
    mixed = write_csv(tmp_path / "mixed.csv", ["timestamp", "v"], [[T0.isoformat(), 1], ["yesterday", 2]] * 3)
    with pytest.raises(AnalyzeError, match="no column holds times"):
        profile_file(mixed, None, set())
    with pytest.raises(AnalyzeError, match="column 'timestamp' does not hold ISO 8601 times, epoch numbers"):
        profile_file(mixed, "timestamp", set())
    late = [[(T0 + timedelta(minutes=i)).isoformat(), i] for i in range(200)] + [["soon", 1]] * 100
    with pytest.raises(AnalyzeError, match=r"column 'timestamp': only 200 of 300 rows hold a time \(e.g. 'soon'"):
        profile_file(write_csv(tmp_path / "late.csv", ["timestamp", "v"], late), None, set())


def test_a_few_rows_without_a_time_do_not_stop_the_analysis(tmp_path: Path) -> None:
    rows = [[(T0 + timedelta(minutes=i)).isoformat(), i] for i in range(100)]
    rows[40][0] = "not a time"
    profile = profile_file(write_csv(tmp_path / "m.csv", ["timestamp", "v"], rows), None, set())
    # The row is left to the file source, which dead-letters it with the parse error.
    assert (profile.time_field, profile.rows, profile.interval_s) == ("timestamp", 100, 60.0)


def test_the_written_config_is_valid_and_each_file_is_its_own_stream(tmp_path: Path) -> None:
    files = [series(tmp_path / "cpu load.csv", timedelta(minutes=5), 300),
             series(tmp_path / "requests.csv", timedelta(minutes=1), 300)]
    (tmp_path / "events.jsonl").write_text("\n".join(
        json.dumps({"ts": int((T0 + timedelta(minutes=i)).timestamp() * 1000), "kind": ["a", "b"][i % 2],
                    "ok": i % 3 == 0, "meta": {"host": "h1"}, "tags": ["x"]})
        for i in range(300)))
    files.append(tmp_path / "events.jsonl")
    plan = plan_analysis(*profile_files(files, None))
    folder = tmp_path / "config"
    write_config(plan, folder, tmp_path / "data", REPO / "config" / "cards.yaml")
    assert validate_all(folder)
    assert [s.name for s in load_sources(folder).sources] == ["cpu_load", "requests", "events"]
    preprocessing = load_preprocessing(folder)
    assert [(p.source, p.bar_seconds, p.stream_key) for p in preprocessing.pipeline_by_source] == [
        ("cpu_load", 300, None), ("requests", 60, None), ("events", 60, None)]
    config = load_qraft_config(folder)
    assert (config.partitions.interval_minutes, config.partitions.start) == (60, T0)
    detectors = load_detectors(folder)
    by_name = {d.name: (d.features, d.streams) for d in detectors.detectors}
    # Glob features resolved per stream: the events stream's only numbers are its true/false `ok`, read as 1/0.
    assert (by_name["level_drift"], by_name["level_drift_2"]) == (
        (["ok_mean"], ["events"]), (["value_mean"], ["cpu_load", "requests"]))
    events = plan.profiles[2]
    assert (events.time_unit, events.numeric, events.booleans, events.categorical, events.ignored, events.set_aside) == (
        "ms", ["ok"], ["ok"], ["kind"], ["tags"], {"meta.host": "one value throughout: h1"})
    assert yaml.safe_load((folder / "sources.yaml").read_text())["sources"][2]["options"]["booleans"] == ["ok"]
    assert yaml.safe_load((folder / "sources.yaml").read_text())["sources"][0]["endpoint"] == str(files[0].resolve())


def noisy(seed: int, n: int, step: timedelta = timedelta(minutes=5)) -> list[tuple[datetime, float]]:
    """Seeded readings of either sign, one every `step` from T0."""
    rng = np.random.default_rng(seed)
    return [(T0 + step * i, round(float(v), 3)) for i, v in enumerate(rng.normal(0.0, 5.0, n))]


def test_dialects_are_read_as_the_file_source_reads_them(tmp_path: Path) -> None:
    rows = noisy(1, 60)
    plain = [f"{t:%Y-%m-%d %H:%M:%S},{v}" for t, v in rows]
    files = {
        "bom.csv": ("timestamp,value\n" + "\n".join(plain) + "\n").encode("utf-8-sig"),
        "crlf.csv": ("timestamp,value\r\n" + "\r\n".join(plain) + "\r\n").encode(),
        "semicolon.csv": ("timestamp;value\n" + "\n".join(p.replace(",", ";") for p in plain)).encode(),
        "quoted.csv": ('"timestamp","value"\n' + "\n".join(f'"{t:%Y-%m-%d %H:%M:%S}","{v}"' for t, v in rows)).encode(),
        # A malformed last line is left to the file source, which dead-letters it.
        "ragged.csv": ("timestamp,value\n" + "\n".join(plain) + '\n2014-02-01 05:00:00,1,2,"open\n').encode(),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        profile = profile_file(tmp_path / name, None, set())
        assert (profile.time_field, profile.numeric, profile.rows, profile.first, profile.last, profile.interval_s) == (
            "timestamp", ["value"], 60, T0, rows[-1][0], 300.0), name
        assert (profile.delimiter, profile.malformed) == (";" if "semicolon" in name else ",",
                                                           1 if name == "ragged.csv" else 0), name
    lines = [json.dumps({"at": t.isoformat(), "v": v, "host": "ab"[i % 2]}) for i, (t, v) in enumerate(rows)]
    (tmp_path / "m.jsonl").write_text("\n".join([*lines[:30], "{not json", "[1]", *lines[30:]]) + "\n")
    profile = profile_file(tmp_path / "m.jsonl", None, set())
    assert (profile.time_field, profile.numeric, profile.categorical, profile.rows, profile.malformed) == (
        "at", ["v"], ["host"], 60, 2)


def test_times_in_any_column_order_offset_and_row_order(tmp_path: Path) -> None:
    rows = noisy(2, 80)
    shuffled = [rows[i] for i in np.random.default_rng(2).permutation(len(rows))]
    # Second column, named like nothing; offsets that differ from row to row; rows out of order; each twice.
    write_csv(tmp_path / "m.csv", ["load", "seen", "host"],
              [[v, (t + timedelta(hours=i % 3)).strftime("%Y-%m-%dT%H:%M:%S") + ["Z", "+01:00", "+02:00"][i % 3],
                ["h1", "h2"][i % 2]] for t, v in shuffled for i in [rows.index((t, v))]] * 2)
    profile = profile_file(tmp_path / "m.csv", None, set())
    assert (profile.time_field, profile.first, profile.last, profile.interval_s, profile.rows) == (
        "seen", T0, rows[-1][0], 300.0, 160)
    assert (profile.numeric, profile.categorical) == (["load"], ["host"])


def test_missing_value_spellings_leave_a_column_numeric(tmp_path: Path) -> None:
    spellings = ["", "NaN", "null", "NULL", "NA", "n/a", "None", "-"]
    rows = [[t.isoformat(), spellings[i % 8] if i % 2 else v] for i, (t, v) in enumerate(noisy(3, 80))]
    profile = profile_file(write_csv(tmp_path / "m.csv", ["timestamp", "value"], rows), None, set())
    assert profile.numeric == ["value"]


def test_files_that_cannot_be_analysed_are_left_out_with_their_reason(tmp_path: Path) -> None:
    good = series(tmp_path / "good.csv", timedelta(minutes=5), 50)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "one.csv").write_text("timestamp,value\n2014-02-01T00:00:00Z,1\n2014-02-01T00:00:00Z,2\n")
    # "1,325" could be 1.325 in a file separated by "|" (see test_analyze_hostile for the readable ones).
    (tmp_path / "thousands.csv").write_text("timestamp|value\n" + "\n".join(
        f"{t.isoformat()}|{1000 + int(abs(v) * 100):,}" for t, v in noisy(4, 50)))
    bad = ["empty.csv", "one.csv", "thousands.csv"]
    profiles, rejected = profile_files([tmp_path / name for name in bad[:2]] + [good] + [tmp_path / n for n in bad[2:]],
                                       None)
    assert [p.source for p in profiles] == ["good"]
    assert [r.replace(str(tmp_path) + "/", "") for r in rejected] == [
        "empty.csv: is empty",
        "one.csv: needs rows at two different times at least, to tell how often it is sampled",
        "thousands.csv: no numeric or categorical column besides the time column 'timestamp' ('value' holds e.g. "
        "'1,325': numbers must be plain like 1234.5, or grouped like 1,234.5 or 1 234, or with a decimal comma like "
        "1234,5 in a file not separated by commas); value read as text: a comma before exactly 3 digits may group "
        "thousands or mark decimals ('1,325'); write its numbers with a decimal point, or save the file separated "
        "by ';' to have the comma read as decimal",
    ]
    with pytest.raises(AnalyzeError, match=r"(?s)no file can be analysed:.*empty.csv: is empty.*one.csv: needs"):
        profile_files([tmp_path / name for name in bad], None)


def test_a_monthly_series_written_year_month_is_read_with_daily_bars(tmp_path: Path) -> None:
    months = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(144)]
    path = write_csv(tmp_path / "airline.csv", ["month", "passengers"], [[m, 100 + i] for i, m in enumerate(months)])
    plan = plan_analysis(*profile_files([path], None))
    [profile] = plan.profiles
    assert (profile.time_field, profile.time_unit, profile.rows) == ("month", "iso", 144)
    assert (profile.first, profile.last) == (datetime(1949, 1, 1, tzinfo=UTC), datetime(1960, 12, 1, tzinfo=UTC))
    # Months are 28 to 31 days apart: bars and windows of a day, the longest there are.
    assert (profile.bar_seconds, plan.interval_minutes, profile.numeric) == (86_400, 1440, ["passengers"])
