"""`qraft analyze` on files a hostile or careless user makes: numbers with thousands separators, files far
apart in time, odd time encodings, encodings and shapes. Each gives a profile the file source agrees with,
or a one-line reason naming the file."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.analyze import describe_plan, infer_config, profile_file, profile_files
from qraft_core.bootstrap import bootstrap
from qraft_core.bus.fake import MemoryBus
from qraft_core.clean import clean_frame
from qraft_core.config import load_qraft_config, load_sources
from qraft_core.lander import land_batch
from qraft_core.services.fake_runner import FakePipelineRunner
from qraft_core.store.fake import MemoryStore

T0 = datetime(2014, 2, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


def landed_payloads(config_dir: Path, tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    """What each written file source publishes, through the lander's judgement: payloads by source."""
    out: dict[str, list[dict[str, object]]] = {}
    for source in load_sources(config_dir).sources:
        bus = MemoryBus()
        asyncio.run(build_adapter(source, tmp_path / "state").run(bus, asyncio.Event()))
        batch = land_batch([(m.subject, m.data) for m in bus.queue])
        out[source.name] = [json.loads(p) for p in batch.raw_events.sort("timestamp")["payload"].to_list()]
    return out


def test_numbers_with_thousands_separators_are_numbers(tmp_path: Path) -> None:
    times = [T0 + STEP * i for i in range(40)]
    # Few distinct values: before, these were taken for categories.
    levels = ["1,000.5", "2,500.25", "12,000.0", "987.5"]
    (tmp_path / "commas.csv").write_text("timestamp,value\n" + "".join(
        f'{t:%Y-%m-%dT%H:%M:%SZ},"{levels[i % 4]}"\n' for i, t in enumerate(times)))
    (tmp_path / "spaces.csv").write_text("timestamp;count;host\n" + "".join(
        f"{t:%Y-%m-%dT%H:%M:%SZ};{['1 234', '2 000 000', '-7 500', '12'][i % 4]};h{i % 2}\n"
        for i, t in enumerate(times)))
    (tmp_path / "quoted.jsonl").write_text("".join(
        json.dumps({"ts": t.isoformat(), "load": levels[i % 4]}) + "\n" for i, t in enumerate(times)))
    plan = infer_config(sorted(tmp_path.glob("*.*")), None, tmp_path / "config", tmp_path / "data")
    assert [(p.source, p.numeric, p.categorical, p.thousands) for p in plan.profiles] == [
        ("commas", ["value"], [], {"value": ","}),
        ("quoted", ["load"], [], {"load": ","}),
        ("spaces", ["count"], ["host"], {"count": " "}),
    ]
    payloads = landed_payloads(tmp_path / "config", tmp_path)
    assert [p["value"] for p in payloads["commas"][:4]] == [1000.5, 2500.25, 12000.0, "987.5"]
    assert [p["count"] for p in payloads["spaces"][:4]] == [1234, 2000000, -7500, "12"]
    assert [p["load"] for p in payloads["quoted"][:2]] == [1000.5, 2500.25]


def test_a_comma_that_may_be_a_decimal_comma_is_not_read_as_thousands(tmp_path: Path) -> None:
    # Separated by "|", "1,500" may be 1.5: neither reading is taken, and the plan says why.
    path = tmp_path / "eu.csv"
    path.write_text("timestamp|value|other\n" + "".join(
        f"{T0 + STEP * i:%Y-%m-%dT%H:%M:%SZ}|{['1,500', '2,250'][i % 2]}|{i % 7}\n" for i in range(40)))
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.categorical, profile.thousands) == (["other"], ["value"], {})
    assert profile.notes == ["value read as text: a comma before exactly 3 digits may group thousands or mark "
                             "decimals ('1,500'); write its numbers with a decimal point, or save the file "
                             "separated by ';' to have the comma read as decimal"]


def minute_series(path: Path, start: datetime, rows: int) -> Path:
    path.write_text("timestamp,value\n" + "".join(
        f"{start + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ},{(i * 7) % 11 - 5}\n" for i in range(rows)))
    return path


def test_files_far_apart_in_time_run_only_their_own_spans(tmp_path: Path) -> None:
    # Two overlapping files in 2014, one a year later: two spans of windows, nothing in between.
    files = [minute_series(tmp_path / "a.csv", T0, 600), minute_series(tmp_path / "b.csv", T0 + timedelta(hours=5), 600),
             minute_series(tmp_path / "c.csv", T0 + timedelta(days=365), 600)]
    plan = infer_config(files, None, tmp_path / "config", tmp_path / "data")
    assert plan.interval_minutes == 20
    assert plan.spans == [(T0, T0 + timedelta(hours=15)),
                          (T0 + timedelta(days=365), T0 + timedelta(days=365, hours=10))]
    assert (plan.start, plan.end, plan.windows, plan.runs) == (T0, T0 + timedelta(days=365, hours=10), 75, 2)
    assert describe_plan(plan)[-1] == "  75 windows of 20 min in 2 run(s) over 2 time spans (the windows between them " \
                                      "hold no data)"
    runner = FakePipelineRunner(windows_per_run=plan.max_windows_per_run, interval_s=1200)
    services = bootstrap(tmp_path / "config", store=MemoryStore(), bus=MemoryBus(),
                         runner=runner)
    ran: list[tuple[str, bool]] = []
    assert services.pipeline.run_spans(plan.spans, lambda key, ok: ran.append((key, ok))) == {
        "succeeded": 2, "failed": 0}
    assert runner.materialized == plan.spans and ran == [("", True), ("", True)]
    # A failed run stops the spans after it too (their windows need its detector state); its id is reported.
    runner.fail = True
    ran.clear()
    assert services.pipeline.run_spans(plan.spans, lambda key, ok: ran.append((key, ok))) == {
        "succeeded": 0, "failed": 1}
    assert ran == [("fake-run-1", False)] and runner.materialized[2:] == plan.spans[:1]


def lines_of(rows: list[tuple[datetime, float]], render: Callable[[datetime, float], str]) -> str:
    return "".join(render(t, v) + "\n" for t, v in rows)


def readings(n: int = 60, step: timedelta = STEP, start: datetime = T0) -> list[tuple[datetime, float]]:
    return [(start + step * i, round(((i * 37) % 23) / 7 - 1.5, 3)) for i in range(n)]


ISO = "%Y-%m-%dT%H:%M:%SZ"
# name → (bytes, (time column, unit, first time, interval in s, numeric, rows, malformed))
READABLE: dict[str, tuple[bytes, tuple[object, ...]]] = {
    "gzipped.csv.gz": (gzip.compress(("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v}"))
                                     .encode()), ("timestamp", "iso", T0, 300.0, ["value"], 60, 0)),
    "lines.jsonl.gz": (gzip.compress(lines_of(readings(), lambda t, v: json.dumps({"at": f"{t:{ISO}}", "v": v}))
                                     .encode()), ("at", "iso", T0, 300.0, ["v"], 60, 0)),
    "tabs.tsv": (("timestamp\tvalue\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}}\t{v}")).encode(),
                 ("timestamp", "iso", T0, 300.0, ["value"], 60, 0)),
    # Excel's "Unicode text": UTF-16 with its byte order mark, tab-separated.
    "excel.csv": (("time\tvalue\n" + lines_of(readings(), lambda t, v: f"{t:%Y-%m-%d %H:%M:%S}\t{v}"))
                  .encode("utf-16"), ("time", "iso", T0, 300.0, ["value"], 60, 0)),
    # The date and the time of day in columns of their own: sampled every 5 minutes, not daily.
    "date and time.csv": (("date,time,value\n" + lines_of(readings(400), lambda t, v: f"{t:%Y-%m-%d},{t:%H:%M:%S},{v}"))
                          .encode(), ("date", "iso", T0, 300.0, ["value"], 400, 0)),
    "datum und zeit.csv": (("Datum;Zeit;Wert\n" + lines_of(readings(400), lambda t, v: f"{t:%d.%m.%Y};{t:%H:%M};{v}"))
                           .encode(), ("Datum", "%d.%m.%Y %H:%M", T0, 300.0, ["Wert"], 400, 0)),
    # UTF-16 without a byte order mark, little and big endian.
    "no mark.csv": (("time,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v}")).encode("utf-16-le"),
                    ("time", "iso", T0, 300.0, ["value"], 60, 0)),
    "no mark.jsonl": (lines_of(readings(), lambda t, v: json.dumps({"ts": int(t.timestamp()), "v": v}))
                      .encode("utf-16-be"), ("ts", "s", T0, 300.0, ["v"], 60, 0)),
    "utf16.jsonl": (lines_of(readings(), lambda t, v: json.dumps({"ts": int(t.timestamp() * 1000), "v": v}))
                    .encode("utf-16"), ("ts", "ms", T0, 300.0, ["v"], 60, 0)),
    # A row holding bytes that are not UTF-8, and one over the record size limit: each a dead letter.
    "broken rows.csv": (b"timestamp,value,note\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v},n").encode()
                        .replace(b",n\n", b",\xff\xfe\n", 1).replace(b",n\n", b"," + b"x" * 2_000_000 + b"\n", 1),
                        ("timestamp", "iso", T0 + 2 * STEP, 300.0, ["value"], 58, 2)),
    "every second.csv": (("timestamp,value\n" + lines_of(readings(step=timedelta(seconds=1)),
                                                         lambda t, v: f"{t:{ISO}},{v}")).encode(),
                         ("timestamp", "iso", T0, 1.0, ["value"], 60, 0)),
    "daily.csv": (("timestamp,value\n" + lines_of(readings(step=timedelta(days=1)), lambda t, v: f"{t:%Y-%m-%d},{v}"))
                  .encode(), ("timestamp", "iso", T0, 86400.0, ["value"], 60, 0)),
    "epoch 1970.csv": (("epoch,value\n" + lines_of(readings(), lambda t, v: f"{int((t - T0).total_seconds())},{v}"))
                       .encode(), ("epoch", "s", datetime(1970, 1, 1, tzinfo=UTC), 300.0, ["value"], 60, 0)),
    "in 2100.csv": (("timestamp,value\n" + lines_of(readings(start=datetime(2100, 6, 1, tzinfo=UTC)),
                                                    lambda t, v: f"{t:{ISO}},{v}")).encode(),
                    ("timestamp", "iso", datetime(2100, 6, 1, tzinfo=UTC), 300.0, ["value"], 60, 0)),
    "day first.csv": (("date,value\n" + lines_of(readings(400, timedelta(hours=1)),
                                                 lambda t, v: f"{t:%d/%m/%Y %H:%M},{v}")).encode(),
                      ("date", "%d/%m/%Y %H:%M", T0, 3600.0, ["value"], 400, 0)),
    "month first.csv": (("day;value\n" + lines_of(readings(step=timedelta(days=1)),
                                                  lambda t, v: f"{t:%m/%d/%Y};{v}")).encode(),
                        ("day", "%m/%d/%Y", T0, 86400.0, ["value"], 60, 0)),
    # Its first 200 rows fall on 02/01/2014, which reads either way; the rows after tell.
    "us minutes.csv": (("date,value\n" + lines_of(readings(400), lambda t, v: f"{t:%m/%d/%Y %H:%M},{v}")).encode(),
                       ("date", "%m/%d/%Y %H:%M", T0, 300.0, ["value"], 400, 0)),
    # Extreme values stay numbers; the bar statistics leave out what is not finite.
    "extremes.csv": (("timestamp,value,flat,nothing\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v},5,"))
                     .replace(",5,\n", ",5,\n", 1).encode()
                     .replace(b"-1.5,", b"1e308,").replace(b"0.071,", b"inf,").replace(b"-0.929,", b"-1e308,"),
                     # `flat` holds one value throughout: kept in the payload only.
                     ("timestamp", "iso", T0, 300.0, ["value"], 60, 0)),
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_hostile_but_readable_files_are_profiled_as_the_file_source_reads_them(tmp_path: Path, name: str) -> None:
    content, expected = READABLE[name]
    (tmp_path / name).write_bytes(content)
    plan = infer_config([tmp_path / name], None, tmp_path / "config", tmp_path / "data")
    [p] = plan.profiles
    assert (p.time_field, p.time_unit, p.first, p.interval_s, p.numeric, p.rows, p.malformed) == expected
    # The file source publishes every good row; each bad one is a dead letter with its reason.
    [source] = load_sources(tmp_path / "config").sources
    bus = MemoryBus()
    stats = asyncio.run(build_adapter(source, tmp_path / "state").run(bus, asyncio.Event()))
    assert (stats.published, stats.dead_lettered) == (p.rows, p.malformed)
    batch = land_batch([(m.subject, m.data) for m in bus.queue])
    assert batch.raw_events.height == p.rows
    assert batch.raw_events["timestamp"].min() == p.first
    # Cleaning takes every landed row: data dated in 2100 is not a broken clock here.
    # As the pipeline cleans: event ages against the newest event of the source.
    newest = {source.name: batch.raw_events["timestamp"].max()}
    _, rejected = clean_frame(batch.raw_events, timedelta(minutes=1), load_qraft_config(tmp_path / "config").clean,
                              newest)  # type: ignore[arg-type]
    assert rejected["reason"].to_list() == []


UNREADABLE = {
    "empty.csv": (b"", "is empty"),
    "header only.csv": (b"timestamp,value\n", "has no rows"),
    "one row.csv": (b"timestamp,value\n2014-02-01T00:00:00Z,1\n",
                    "needs rows at two different times at least, to tell how often it is sampled"),
    # 0x81 is neither UTF-8 nor Windows-1252.
    "broken header.csv": (b"temp\x81rature,value\n2014-02-01T00:00:00Z,1\n",
                          r"the header line is not UTF-8 or UTF-16 text (temp\udc81rature,value)"),
    "noise.csv": (bytes(range(128, 256)) * 4, "the header line is not UTF-8 or UTF-16 text"),
    "not gzip.csv.gz": (b"timestamp,value\n", "cannot be read: Not a gzipped file"),
    "data.xlsx": (b"PK\x03\x04", "cannot tell the format from the extension"),
    "all null.csv": (("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},")).encode(),
                     "no numeric or categorical column besides the time column 'timestamp'"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_are_left_out_with_a_one_line_reason(tmp_path: Path, name: str) -> None:
    content, reason = UNREADABLE[name]
    (tmp_path / name).write_bytes(content)
    series = tmp_path / "good.csv"
    series.write_text("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v}"))
    profiles, rejected = profile_files([tmp_path / name, series], None)
    assert [p.source for p in profiles] == ["good"]
    [line] = rejected
    assert line.startswith(f"{tmp_path / name}: {reason}") and "\n" not in line


def test_numbers_with_a_decimal_comma_are_numbers(tmp_path: Path) -> None:
    # As Excel writes CSV in most of Europe: ";" between fields, "," before the decimals.
    levels = ["-1,5", "2", "1.234,25", "0,125"]
    (tmp_path / "eu.csv").write_text("timestamp;value;ambiguous\n" + "".join(
        f"{T0 + STEP * i:%Y-%m-%dT%H:%M:%SZ};{levels[i % 4]};{['1,500', '2,250'][i % 2]}\n" for i in range(40)))
    plan = infer_config([tmp_path / "eu.csv"], None, tmp_path / "config", tmp_path / "data")
    [p] = plan.profiles
    # "1,500" alone may be 1.5 or 1500; in a ";" file without a "." decimal, it is 1.5.
    assert (p.numeric, p.decimal_comma, p.categorical) == (["value", "ambiguous"], ["value", "ambiguous"], [])
    payloads = landed_payloads(tmp_path / "config", tmp_path)
    assert [x["value"] for x in payloads["eu"][:4]] == [-1.5, 2, 1234.25, 0.125]
    assert [x["ambiguous"] for x in payloads["eu"][:2]] == [1.5, 2.25]


def test_a_json_file_holding_one_array_of_objects_is_read_like_json_lines(tmp_path: Path) -> None:
    rows = [{"ts": f"{t:{ISO}}", "value": v} for t, v in readings()]
    (tmp_path / "pretty.json").write_text(json.dumps(rows, indent=2))
    # One element nested too deep, one string holding brackets and an escaped quote, the array never closed:
    # each bad element is a dead letter, the others are read.
    hostile = json.dumps(rows[:30] + [{"ts": f"{T0:{ISO}}", "value": 1, "note": 'a\\"],{['}] + rows[30:])
    hostile = hostile.replace('"value": 0.071}', '"value": ' + "[" * 5000 + "]" * 5000 + "}", 1)
    (tmp_path / "hostile.json").write_text(hostile[:-1] + ', {"ts": ')
    plan = infer_config(sorted(tmp_path.glob("*.json")), None, tmp_path / "config", tmp_path / "data")
    assert [(p.source, p.rows, p.malformed, p.numeric) for p in plan.profiles] == [
        ("hostile", 60, 2, ["value"]), ("pretty", 60, 0, ["value"])]
    payloads = landed_payloads(tmp_path / "config", tmp_path)
    assert [p["value"] for p in payloads["pretty"]] == [v for _, v in readings()]
    assert {p.get("note") for p in payloads["hostile"]} == {None, 'a\\"],{['}


def test_a_folder_or_a_pipe_named_like_a_data_file_is_left_out_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")  # reading it would wait for a writer forever
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v}"))
    profiles, rejected = profile_files([tmp_path / "folder.csv", tmp_path / "pipe.csv", tmp_path / "nothing.csv", good],
                                       None)
    assert [p.source for p in profiles] == ["good"]
    assert rejected == [f"{tmp_path}/folder.csv: is a folder", f"{tmp_path}/pipe.csv: is not a regular file",
                        f"{tmp_path}/nothing.csv: no such file"]


def test_a_windows_1252_file_is_read_as_such_when_none_of_its_text_is_utf8(tmp_path: Path) -> None:
    # Excel's plain "CSV" in Western Europe: every row holding an accent was a dead letter.
    text = "timestamp;température;lieu\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}};{v};{'Orléans' if v > 0 else 'Besançon'}")
    (tmp_path / "excel.csv").write_bytes(text.encode("cp1252"))
    # UTF-8 with one broken row stays UTF-8 (its accents read): the broken row alone is a dead letter.
    (tmp_path / "utf8.csv").write_bytes(text.encode().replace("Besançon".encode(), b"Besan\xe7on", 1))
    plan = infer_config(sorted(tmp_path.glob("*.csv")), None, tmp_path / "config", tmp_path / "data")
    assert [(p.source, p.encoding, p.rows, p.malformed, p.numeric, p.categorical) for p in plan.profiles] == [
        ("excel", "cp1252", 60, 0, ["température"], ["lieu"]), ("utf8", "utf-8", 59, 1, ["température"], ["lieu"])]
    payloads = landed_payloads(tmp_path / "config", tmp_path)
    assert {p["lieu"] for p in payloads["excel"]} == {p["lieu"] for p in payloads["utf8"]} == {"Orléans", "Besançon"}


def test_a_files_only_column_of_numbers_then_text_is_analysed_without_the_text(tmp_path: Path) -> None:
    # A logger that wrote "error" for a while: a third of the rows. Before, the file was left out.
    path = tmp_path / "logger.csv"
    path.write_text("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v if t < T0 + 40 * STEP else 'error'}"))
    plan = infer_config([path], None, tmp_path / "config", tmp_path / "data")
    [p] = plan.profiles
    assert (p.numeric, p.texts, p.rows) == (["value"], {"value": 20}, 60)
    assert "(20 text value(s) of value left out of the bar statistics)" in describe_plan(plan)[0]
    payloads = landed_payloads(tmp_path / "config", tmp_path)
    assert [x["value"] for x in payloads["logger"][39:41]] == [str(readings()[39][1]), "error"]
    # A column of a few numbers among text is still not numeric when another column is.
    path.write_text("timestamp,value,note\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v},{'1' if v > 1 else 'ok'}"))
    assert (profile_file(path, None, set()).numeric, profile_file(path, None, set()).texts) == (["value"], {})


def test_files_of_one_name_in_two_folders_are_two_streams_told_apart_by_their_path(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "cpu.csv").write_text("timestamp,value\n" + lines_of(readings(), lambda t, v: f"{t:{ISO}},{v}"))
    plan = infer_config([tmp_path / "a" / "cpu.csv", tmp_path / "b" / "cpu.csv"], None, tmp_path / "config", tmp_path / "data")
    assert [p.source for p in plan.profiles] == ["cpu", "cpu_2"]
    assert [line.split(":")[0] for line in describe_plan(plan)[:2]] == [
        f"  {tmp_path}/a/cpu.csv → stream cpu", f"  {tmp_path}/b/cpu.csv → stream cpu_2"]


def test_times_without_a_zone_are_said_to_be_read_as_utc(tmp_path: Path) -> None:
    for name, written, step in (("local.csv", "%Y-%m-%d %H:%M:%S", STEP), ("offset.csv", "%Y-%m-%dT%H:%M:%S+01:00", STEP),
                                ("days.csv", "%Y-%m-%d", timedelta(days=1))):
        (tmp_path / name).write_text("timestamp,value\n" + lines_of(readings(step=step),
                                                                    lambda t, v, w=written: f"{t:{w}},{v}"))
    plan = infer_config(sorted(tmp_path.glob("*.csv")), None, tmp_path / "config", tmp_path / "data")
    assert [(p.source, p.zoneless) for p in plan.profiles] == [("days", False), ("local", True), ("offset", False)]
    assert [("read as UTC" in line) for line in describe_plan(plan)[:3]] == [False, True, False]
