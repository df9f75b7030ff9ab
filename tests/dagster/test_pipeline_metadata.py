"""What the UI shows after the pipeline ran in this process (as `qraft demo` runs it), on real chDB:
per-partition metadata, asset checks, raw_events observations, and the sensor cursor shared with the daemon."""

import json
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, build_sensor_context

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from tests.conftest import REPO

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SPIKE_S = 30 * 60
WINDOWS = [f"2026-01-05-00:{m:02d}" for m in range(40)]


def _trades() -> bytes:
    """40 minutes of one trade a second around 100; at 00:30 the price steps up by 3 and 20 s of heavy trading
    (8 trades a second, ten times the size) follow: one anomaly. Trade 7 has an unreadable price."""
    rng = random.Random(3)
    lines = []
    for second in range(40 * 60):
        burst = SPIKE_S <= second < SPIKE_S + 20
        for k in range(8 if burst else 1):
            ts = (T0 + timedelta(seconds=second + k / 10)).isoformat()
            price = 100 + rng.gauss(0, 0.05) + (3 if second >= SPIKE_S else 0)
            size = (5.0 if burst else 0.5) * (1 + rng.random())
            lines.append(json.dumps({
                "event_id": f"e{len(lines)}", "source": "binance_spot", "type": "trade", "timestamp": ts,
                "ingest_time": ts, "meta": {"parser_version": "test/1"},
                "payload": {"s": "BTCUSDT", "p": "x" if len(lines) == 7 else str(round(price, 3)),
                            "q": str(round(size, 3)), "m": rng.random() < 0.5},
            }))
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def caught_up(tmp_path_factory):
    """40 minutes of trades with one anomaly, run by `catch_up` as the demo runs them."""
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import catch_up, open_instance

    root = tmp_path_factory.mktemp("caught_up")
    shutil.copytree(REPO / "config", root / "config")
    saved = {k: os.environ.get(k) for k in ("QRAFT_DATA_DIR", "QRAFT_CONFIG_DIR",
                                            "QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "QRAFT_MLFLOW_ENABLED")}
    os.environ.update({"QRAFT_DATA_DIR": str(root / "data"), "QRAFT_CONFIG_DIR": str(root / "config"),
                       "QRAFT_PARTITIONS_ALLOWED_LATENESS_S": "0", "QRAFT_MLFLOW_ENABLED": "false"})
    cwd = Path.cwd()
    os.chdir(REPO)  # workspace.yaml, as `qraft up` finds it
    rt = Runtime.load(root / "config")
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades())])
                    .raw_events)
    defs = build_definitions(root / "config")
    instance = open_instance(root / "dagster")
    runs = []
    cursor = catch_up(defs, instance, lambda request, result: runs.append(result))
    yield {"rt": rt, "defs": defs, "instance": instance, "runs": runs, "cursor": cursor}
    os.chdir(cwd)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _latest(instance, asset: str) -> dict[str, dict]:
    records = instance.fetch_materializations(AssetKey(asset), limit=100).records
    latest: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        latest[record.partition_key] = record.asset_materialization.metadata
    return latest


def test_each_partition_describes_its_own_window(caught_up):
    instance = caught_up["instance"]
    assert [r.success for r in caught_up["runs"]] == [True]
    clean = _latest(instance, "clean_events")
    assert sorted(clean) == WINDOWS
    counts = [(clean[k]["raw_events"].value, clean[k]["clean_events"].value, clean[k]["dead_letters"].value)
              for k in WINDOWS]
    assert counts[:2] == [(60, 59, 1), (60, 60, 0)] and counts[30] == (200, 200, 0)
    assert {counts[m] for m in range(40) if m not in (0, 30)} == {(60, 60, 0)}
    # 10-second bars: 6 per window.
    assert {_latest(instance, "features")[k]["bars"].value for k in WINDOWS} == {6}
    store = caught_up["rt"].store
    findings = store.select("pattern_events", columns=["pattern_id", "window_start"])
    assert [w.strftime("%H:%M") for w in findings["window_start"]] == ["00:30"]
    patterns, cards = _latest(instance, "pattern_events"), _latest(instance, "explanation_cards")
    for key in WINDOWS:
        mine = sorted(p for p, w in findings.iter_rows() if w.strftime("%Y-%m-%d-%H:%M") == key)
        table = patterns[key]["findings_table"].value
        assert patterns[key]["findings"].value == len(mine) == cards[key]["cards"].value
        assert sorted(r.data["pattern_id"] for r in table.records) == mine
        assert [r.data["explorer"] for r in table.records] == [
            f"http://127.0.0.1:8800/#/finding/{r.data['pattern_id']}" for r in table.records]
        text = cards[key]["cards_markdown"].value
        assert (text == "No findings in this window.") == (not mine)


def test_asset_checks_pass_on_the_windows_of_the_run(caught_up):
    run_id = caught_up["runs"][0].run_id
    evaluations = caught_up["runs"][0].get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations} == {
        ("clean_events", "dead_letter_ratio"): True, ("clean_events", "no_rejected_windows"): True,
        ("detections", "detector_health"): True, ("explanation_cards", "freshness"): True,
    }
    ratio = next(e for e in evaluations if e.check_name == "dead_letter_ratio")
    assert ratio.metadata["dead_letters"].value == 1 and ratio.metadata["raw_events"].value == 2540
    assert run_id


def test_the_sensor_records_what_landed_on_raw_events(caught_up):
    records = caught_up["instance"].fetch_observations(AssetKey("raw_events"), limit=10).records
    assert len(records) == 1  # one landing seen; later ticks saw nothing new
    metadata = records[0].asset_observation.metadata
    # Observed when the events landed, before cleaning rejected trade 7: no dead letter yet.
    assert (metadata["events"].value, metadata["dead_letters"].value) == (2540, 0)
    assert metadata["binance_spot/events"].value == 2540
    assert metadata["binance_spot/newest_event"].value == "2026-01-05T00:39:59.000Z"


def test_the_daemon_continues_from_the_cursor_of_the_in_process_runs(caught_up):
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from qraft_dagster.execute import SENSOR_NAME, stored_cursor

    instance, defs = caught_up["instance"], caught_up["defs"]
    run = instance.get_run_by_id(caught_up["runs"][0].run_id)
    assert run.tags["dagster/sensor_name"] == SENSOR_NAME
    assert run.tags["dagster/run_key"] == "closed:2026-01-05T00:00:00.000Z:2026-01-05T00:40:00.000Z"
    # The daemon finds its sensor's state by the selector of the code location workspace.yaml loads.
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(["workspace.yaml"])) as workspace:
        location = next(iter(workspace.create_request_context().get_code_location_entries().values()))
        remote = location.code_location.get_repository("__repository__").get_sensor(SENSOR_NAME)
        state = instance.get_instigator_state(remote.get_remote_origin_id(), remote.selector_id)
    assert state.instigator_data.cursor == caught_up["cursor"] == stored_cursor(instance)
    tick = defs.resolve_sensor_def(SENSOR_NAME).evaluate_tick(
        build_sensor_context(instance=instance, cursor=state.instigator_data.cursor, resources=defs.resources))
    assert tick.run_requests == []
