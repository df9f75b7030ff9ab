"""The demo window end to end (files → real NATS → lander → chDB → Dagster), replayed and
compared with committed goldens, River-only and River+CapyMOA.

Update the goldens after an intended change with:
    QRAFT_WRITE_GOLDEN=1 uv run pytest tests/replay
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qraft_core.events import PatternEvent
from qraft_core.golden import engine_agreement
from qraft_core.replays import ReplayRegistry
from qraft_core.runtime import Runtime
from qraft_core.store.base import Filter

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
ARTIFACTS = Path(__file__).parent / "artifacts"
START, END = "2026-01-05T00:00:00Z", "2026-01-05T01:30:00Z"
WRITE = os.environ.get("QRAFT_WRITE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def landed(tmp_path_factory, demo_config):
    """The demo data landed through a real NATS server into a private chDB store."""
    from qraft_cli.land import run_lander
    from qraft_core.bus.embedded import EmbeddedNats
    from qraft_core.demo.generate import generate_demo
    from qraft_core.services.pipeline import publish_sources

    root = tmp_path_factory.mktemp("replay")
    demo = root / "demo"
    generate_demo(demo)
    configs = {
        "river_capymoa": demo_config(REPO / "config", root / "config_both", demo, capymoa=True),
        "river": demo_config(REPO / "config", root / "config_river", demo, capymoa=False),
    }
    server = EmbeddedNats(root / "nats").start()
    saved = {k: os.environ.get(k) for k in ("QRAFT_DATA_DIR", "QRAFT_NATS_URL", "QRAFT_CONFIG_DIR")}
    os.environ.update(QRAFT_DATA_DIR=str(root / "data"), QRAFT_NATS_URL=server.url)
    try:
        rt = Runtime.load(configs["river_capymoa"])
        asyncio.run(publish_sources(rt))
        stats = asyncio.run(run_lander(rt, until_idle=True))
        yield {"root": root, "configs": configs, "landed": stats.landed}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _qraft(config: Path, *args: str) -> tuple[int, dict | str]:
    from qraft_cli import main

    result = CliRunner().invoke(main, ["--config-dir", str(config), *args], catch_exceptions=False)
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout + result.stderr


def _patterns(config: Path, start: str, end: str) -> list[PatternEvent]:
    rt = Runtime.load(config)
    frame = rt.store.select(
        "pattern_events",
        start=datetime.fromisoformat(start.replace("Z", "+00:00")),
        end=datetime.fromisoformat(end.replace("Z", "+00:00")),
        columns=["body"], order_by=("window_start", "pattern_id"),
    )
    return [PatternEvent.model_validate_json(body) for body in frame["body"]]


@pytest.mark.parametrize("engines", ["river", "river_capymoa"])
def test_demo_window_matches_its_golden(landed, engines):
    config = landed["configs"][engines]
    golden = GOLDEN / f"demo_{engines}.json"
    args = ["replay", "--start", START, "--end", END, "--in-process", "--json", "--compare", str(golden)]
    code, summary = _qraft(config, *args, *(["--write-golden"] if WRITE else []))
    assert code == 0, json.dumps(summary.get("golden") if isinstance(summary, dict) else summary, indent=1)
    assert summary["status"] == "succeeded"
    assert summary["partitions"] == 90
    assert summary["events"] > 50_000
    assert summary["pattern_events"] == len(json.loads(golden.read_text())["patterns"]) > 0
    if engines == "river_capymoa":
        report = engine_agreement(_patterns(config, START, END))
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "engine_agreement.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report["counts"]))
        # CapyMOA raises its own signals in the run. Whether one becomes a finding (its own, or merged
        # with another engine's) depends on which engine dates a change first: the calibrated drift
        # test does on the demo's drifts, and CapyMOA's later CUSUM signals fall in its cooldown.
        rt = Runtime.load(config)
        capymoa = rt.store.select("detections", start=datetime.fromisoformat(START.replace("Z", "+00:00")),
                                  end=datetime.fromisoformat(END.replace("Z", "+00:00")),
                                  where=[Filter("engine", "=", "capymoa")], columns=["signal_id"])
        assert capymoa.height > 0
        river = json.loads((GOLDEN / "demo_river.json").read_text())["patterns"]
        # Every finding without CapyMOA is still there when CapyMOA runs beside it (merging only adds
        # evidence), dated within the merge tolerance: a CapyMOA signal a window earlier dates the group.
        both = json.loads(golden.read_text())["patterns"]
        tolerance = yaml.safe_load((config / "detectors.yaml").read_text())["merge"]["tolerance_s"]

        def seconds(p: dict) -> float:
            return datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()

        assert all(any(p["type"] == q["type"] and abs(seconds(p) - seconds(q)) <= tolerance for q in both)
                   for p in river)


def test_replaying_a_later_window_restores_state_and_reproduces_the_original(landed):
    config = landed["configs"]["river_capymoa"]
    code, _ = _qraft(config, "replay", "--start", START, "--end", END, "--in-process", "--json")
    assert code == 0
    original = [p.model_dump_json() for p in _patterns(config, "2026-01-05T00:50:00Z", END)]
    code, summary = _qraft(config, "replay", "--start", "2026-01-05T00:50:00Z", "--end", END, "--in-process", "--json")
    assert code == 0, summary
    assert [p.model_dump_json() for p in _patterns(config, "2026-01-05T00:50:00Z", END)] == original


def test_bad_windows_and_golden_files_are_refused_clearly(landed, tmp_path, monkeypatch):
    config = landed["configs"]["river"]
    code, output = _qraft(config, "replay", "--start", "2025-12-01T00:00:00Z", "--end", "2025-12-01T01:00:00Z", "--wait")
    assert code == 2 and "outside the partitions" in output
    code, output = _qraft(config, "replay", "--start", END, "--end", START, "--wait")
    assert code == 2 and "must be after --start" in output
    wrong = tmp_path / "golden.json"
    wrong.write_text(json.dumps({"version": 99, "patterns": []}))
    code, output = _qraft(config, "replay", "--start", START, "--end", END, "--in-process", "--compare", str(wrong))
    assert code == 2 and "version: expected 1, got 99" in output
    # A window without data, in a store that has none before it either: it completes and says so.
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "empty"))
    code, summary = _qraft(config, "replay", "--start", "2026-01-05T02:00:00Z", "--end", "2026-01-05T02:05:00Z",
                           "--in-process", "--json")
    assert code == 0, summary
    assert summary["no_data"] is True and summary["pattern_events"] == 0


def test_an_overlapping_replay_is_refused_while_one_runs(landed):
    config = landed["configs"]["river"]
    registry = ReplayRegistry(landed["root"] / "data" / "replays")
    running = registry.claim(datetime(2026, 1, 5, 0, 30, tzinfo=UTC), datetime(2026, 1, 5, 1, tzinfo=UTC), [])
    try:
        code, output = _qraft(config, "replay", "--start", START, "--end", END, "--in-process")
        assert code == 3 and f"replay {running.id}" in output and "is running" in output
    finally:
        registry.finish(running, "succeeded", {})


def test_a_killed_replay_reruns_to_completion_with_each_row_once(landed):
    config = landed["configs"]["river"]
    env = {**os.environ, "QRAFT_CONFIG_DIR": str(config)}
    command = [sys.executable, "-m", "qraft_cli", "--config-dir", str(config), "replay",
               "--start", START, "--end", END, "--in-process", "--json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    registry = ReplayRegistry(landed["root"] / "data" / "replays")
    # Kill it once it has claimed its window (whatever it has written by then).
    while process.poll() is None and not registry.running():
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    code, summary = _qraft(config, "replay", "--start", START, "--end", END, "--in-process", "--json")
    assert code == 0, summary
    rt = Runtime.load(config)
    ids = rt.store.select("pattern_events", columns=["pattern_id"])["pattern_id"].to_list()
    assert len(ids) == len(set(ids))
    golden = json.loads((GOLDEN / "demo_river.json").read_text())["patterns"]
    assert summary["pattern_events"] == len(golden)
