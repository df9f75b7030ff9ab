"""`qraft analyze` on files a hostile or careless user makes: numbers with thousands separators, files far
apart in time, odd time encodings, encodings and shapes. Each gives a profile the file source agrees with,
or a one-line reason naming the file."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from qraft_core.adapters.registry import build_adapter
from qraft_core.analyze import infer_config, profile_file
from qraft_core.bootstrap import bootstrap
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import load_sources
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
    # Separated by ";", "1,500" may be 1.5: neither reading is taken.
    path = tmp_path / "eu.csv"
    path.write_text("timestamp;value;other\n" + "".join(
        f"{T0 + STEP * i:%Y-%m-%dT%H:%M:%SZ};{['1,500', '2,250'][i % 2]};{i}\n" for i in range(40)))
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.categorical, profile.thousands) == (["other"], ["value"], {})


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
    runner = FakePipelineRunner(windows_per_run=plan.max_windows_per_run, interval_s=1200)
    services = bootstrap(tmp_path / "config", store=MemoryStore(), bus=MemoryBus(),
                         runner=runner)
    ran: list[tuple[str, bool]] = []
    assert services.pipeline.run_spans(plan.spans, lambda key, ok: ran.append((key, ok))) == {
        "succeeded": 2, "failed": 0}
    assert runner.materialized == plan.spans and ran == [("", True), ("", True)]
    # A failed span does not stop the next one; its run id is reported.
    runner.fail = True
    ran.clear()
    assert services.pipeline.run_spans(plan.spans, lambda key, ok: ran.append((key, ok))) == {
        "succeeded": 0, "failed": 2}
    assert ran == [("fake-run-1", False), ("fake-run-1", False)]
