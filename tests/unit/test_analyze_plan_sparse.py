"""`qraft analyze` plans on files whose windows would far outnumber their rows, and on files named twice."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from qraft_core.analyze import describe_plan, infer_config

T0 = datetime(2014, 2, 1, tzinfo=UTC)


def sparse_rows(path: Path) -> Path:
    """50 seeded rows over 1901-2298 (the median step is 1,966 days)."""
    rng, first = random.Random(1), date(1901, 1, 1)
    days = (date(2298, 12, 31) - first).days
    picked = sorted(set(rng.sample(range(days + 1), 48) + [0, days]))
    path.write_text("date,value\n" + "".join(f"{first + timedelta(d)},{rng.random():.3f}\n" for d in picked))
    return path


def series(path: Path, step: timedelta, n: int) -> Path:
    path.write_text("timestamp,value\n" + "".join(f"{T0 + step * i:%Y-%m-%dT%H:%M:%SZ},{i % 7 - 3}\n" for i in range(n)))
    return path


def test_rows_centuries_apart_are_planned_a_few_windows_each_not_every_day_between(tmp_path: Path) -> None:
    plan = infer_config([sparse_rows(tmp_path / "sparse.csv")], None, tmp_path / "config", tmp_path / "data")
    # Before: one span of 145,367 daily windows. Now a span per row, but for two rows 95 days apart.
    assert (plan.interval_minutes, len(plan.spans), plan.windows, plan.max_windows_per_run, plan.runs) == (
        1440, 49, 148, 100, 49)
    assert (plan.start, plan.end) == (datetime(1901, 1, 1, tzinfo=UTC), datetime(2299, 1, 1, tzinfo=UTC))
    assert describe_plan(plan)[-1] == ("  148 windows of 1440 min in 49 run(s) over 49 time spans "
                                       "(the windows between them hold no data)")


def test_weekly_and_daily_histories_keep_one_run_of_every_window(tmp_path: Path) -> None:
    weekly = infer_config([series(tmp_path / "weekly.csv", timedelta(days=7), 522)], None, tmp_path / "w", tmp_path / "d")
    assert (weekly.interval_minutes, len(weekly.spans), weekly.windows, weekly.runs) == (1440, 1, 3648, 1)
    daily = infer_config([series(tmp_path / "daily.csv", timedelta(days=1), 10_958)], None, tmp_path / "c", tmp_path / "d")
    assert (daily.interval_minutes, len(daily.spans), daily.windows, daily.runs) == (1440, 1, 10_958, 1)


def test_a_file_named_twice_is_read_once_and_files_of_one_name_in_two_folders_twice(tmp_path: Path) -> None:
    for folder in ("t", "u"):
        (tmp_path / folder).mkdir()
        series(tmp_path / folder / "q.csv", timedelta(minutes=5), 60)
    named = [tmp_path / "t" / "q.csv", tmp_path / "t" / "q.csv", tmp_path / "t" / "." / "q.csv", tmp_path / "u" / "q.csv"]
    plan = infer_config(named, None, tmp_path / "config", tmp_path / "data")
    assert [(p.source, p.path, p.given) for p in plan.profiles] == [
        ("q", tmp_path / "t" / "q.csv", 3), ("q_2", tmp_path / "u" / "q.csv", 1)]
    lines = describe_plan(plan)
    assert lines[0].startswith(f"  {tmp_path}/t/q.csv → stream q: 60 rows") and "(given 3 times: read once)" in lines[0]
    assert lines[1].startswith(f"  {tmp_path}/u/q.csv → stream q_2: 60 rows") and "read once" not in lines[1]
    twice = infer_config(named[:2], None, tmp_path / "config2", tmp_path / "data")
    assert "(given twice: read once)" in describe_plan(twice)[0]
