"""`qraft analyze` on files as spreadsheets and collectors export them: decimal commas before three digits,
timestamps a hair late, a value column named as the time by mistake."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qraft_core.analyze import AnalyzeError, bar_size, infer_config, profile_file, profile_files

from .test_analyze_hostile import landed_payloads

T0 = datetime(2024, 3, 1, tzinfo=UTC)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def semicolon_file(path: Path, column: str, values: list[str], delimiter: str = ";") -> Path:
    path.write_text(f"Zeit{delimiter}{column}\n" + "".join(
        f"{T0 + timedelta(minutes=i):%Y-%m-%d %H:%M}{delimiter}{v}\n" for i, v in enumerate(values)))
    return path


def three_decimals(n: int, low: float, high: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.uniform(low, high):.3f}".replace(".", ",") for _ in range(n)]


@pytest.mark.parametrize(("name", "values"), [
    # A utilisation as German Excel writes it: "0,080" cannot group thousands (no group follows a leading 0).
    ("util", three_decimals(200, 0.05, 0.95, 1)),
    ("signed", [f"-{v}" if i % 3 == 0 else v for i, v in enumerate(three_decimals(200, 0.05, 0.95, 2))]),
    # "49,604" could group thousands, but a ";" file without a "." decimal writes its decimals with a comma.
    ("load", three_decimals(200, 40, 60, 3)),
])
def test_three_decimals_after_a_decimal_comma_are_read_as_decimals(tmp_path: Path, name: str,
                                                                  values: list[str]) -> None:
    semicolon_file(tmp_path / f"{name}.csv", "Auslastung", values)
    profile = profile_file(tmp_path / f"{name}.csv", None, set())
    assert (profile.numeric, profile.decimal_comma) == (["Auslastung"], ["Auslastung"])
    payloads = landed_payloads(_written(tmp_path, name), tmp_path)
    assert [p["Auslastung"] for p in payloads[name][:3]] == [float(v.replace(",", ".")) for v in values[:3]]


def _written(tmp_path: Path, name: str) -> Path:
    infer_config([tmp_path / f"{name}.csv"], None, tmp_path / "config", tmp_path / "data")
    return tmp_path / "config"


def test_a_tab_separated_file_reads_a_comma_before_three_digits_as_decimal(tmp_path: Path) -> None:
    path = semicolon_file(tmp_path / "t.tsv", "load", three_decimals(200, 40, 60, 4), delimiter="\t")
    assert profile_file(path, None, set()).decimal_comma == ["load"]


def test_a_comma_that_may_group_thousands_is_refused_saying_so_and_how_to_choose(tmp_path: Path) -> None:
    # Separated by "|", "49,604" may be 49.604 or 49604: the refusal says why, and what reads it either way.
    path = semicolon_file(tmp_path / "pipe.csv", "load", three_decimals(200, 40, 60, 5), delimiter="|")
    good = semicolon_file(tmp_path / "good.csv", "load", three_decimals(200, 0.05, 0.95, 5))
    profiles, [line] = profile_files([path, good], None)
    assert [p.source for p in profiles] == ["good"] and "\n" not in line
    assert "'load' holds e.g. '" in line
    assert "a comma before exactly 3 digits may group thousands or mark decimals" in line
    assert "separated by ';'" in line and "decimal point" in line


def test_a_comma_that_may_group_thousands_in_a_column_left_out_is_said(tmp_path: Path) -> None:
    path = tmp_path / "pipe.csv"
    ambiguous = three_decimals(200, 40, 60, 6)
    path.write_text("timestamp|value|load\n" + "".join(
        f"{T0 + timedelta(minutes=i):{ISO}}|{i % 7}|{v}\n" for i, v in enumerate(ambiguous)))
    profile = profile_file(path, None, set())
    assert profile.numeric == ["value"] and "load" in profile.ignored
    assert any(note.startswith("load read as text: a comma before exactly 3 digits may group thousands")
               for note in profile.notes)


def series(path: Path, stamps: list[str], header: str = "timestamp,value") -> Path:
    rng = random.Random(7)
    path.write_text(header + "\n" + "".join(f"{t},{rng.gauss(50, 1):.3f}\n" for t in stamps))
    return path


def drifting(step_s: int, late_ms: int, n: int = 400) -> list[str]:
    """Timestamps every `step_s` seconds, each `late_ms` later than the one before (a collector's scheduling)."""
    return [f"{T0 + timedelta(seconds=step_s * i, milliseconds=late_ms * i):%Y-%m-%dT%H:%M:%S.%fZ}" for i in range(n)]


@pytest.mark.parametrize(("name", "stamps", "bar"), [
    ("minute", drifting(60, 10), 60),
    ("telegraf", drifting(10, 3), 10),
    # Hourly spreadsheet serial dates written with 6 decimals: 1 h = 0.041667 days, 0.03 s late.
    ("excel", [f"{45352 + i / 24:.6f}" for i in range(400)], 3600),
])
def test_timestamps_a_hair_late_keep_the_bar_of_their_interval(tmp_path: Path, name: str, stamps: list[str],
                                                               bar: int) -> None:
    header = "Date,value" if name == "excel" else "timestamp,value"
    profile = profile_file(series(tmp_path / f"{name}.csv", stamps, header), None, set())
    assert profile.interval_s > bar  # late on the whole: the median step is over the round size
    assert profile.bar_seconds == bar


def test_an_interval_clearly_over_a_bar_size_takes_the_next() -> None:
    assert [bar_size(s) for s in (60.5, 61, 301, 310, 3600 * 1.02)] == [60, 120, 300, 600, 7200]


def test_a_value_column_named_as_the_time_is_refused_naming_the_time_columns(tmp_path: Path) -> None:
    rng = random.Random(9)
    path = tmp_path / "multi.csv"
    path.write_text("timestamp,cpu,region\n" + "".join(
        f"{T0 + timedelta(minutes=i):{ISO}},{rng.gauss(50, 5):.2f},{rng.choice(['eu', 'us'])}\n" for i in range(300)))
    with pytest.raises(AnalyzeError) as refused:
        profile_file(path, "cpu", set())
    message = str(refused.value)
    assert "\n" not in message
    assert "column 'cpu'" in message and "1970-01-01" in message and "not rising" in message
    assert "columns that read as times: timestamp" in message


def test_a_named_column_of_seconds_since_the_start_is_still_the_time(tmp_path: Path) -> None:
    # Rising small numbers are a clock started at 0: the user who names it means it.
    path = series(tmp_path / "rel.csv", [str(i) for i in range(300)], "elapsed,value")
    profile = profile_file(path, "elapsed", set())
    assert (profile.time_field, profile.time_unit) == ("elapsed", "s")
