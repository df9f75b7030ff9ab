"""Running the due windows in this process (`qraft analyze`, `qraft demo`) leaves the window sensor's
cursor where the daemon of a later `qraft up` reads it, from whatever folder it ran. Real chDB."""

import json
from datetime import UTC, datetime, timedelta

import yaml
from dagster import build_sensor_context

from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_catching_up_without_a_workspace_file_stores_the_cursor_for_qraft_up(config_dir, tmp_path, monkeypatch):
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import CODE_LOCATION, catch_up, open_instance, stored_cursor

    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    rt = Runtime.load(config_dir)
    trades = "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=i)).isoformat(), "ingest_time": (T0 + timedelta(seconds=i)).isoformat(),
        "payload": {"p": "100.5", "q": "2"}, "meta": {"parser_version": "test/1"},
    }) for i in range(300)).encode()
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", trades)]).raw_events)
    elsewhere = tmp_path / "elsewhere"  # a folder without a workspace.yaml, as `qraft analyze` runs from
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    home = tmp_path / "dagster_home"
    defs = build_definitions(str(config_dir))
    instance = open_instance(home)
    try:
        runs = []
        cursor = catch_up(defs, instance, lambda request, result: runs.append((request.run_key, result.success)))
        assert runs == [("closed:2026-01-05T00:00:00.000Z:2026-01-05T00:05:00.000Z", True)]
        assert yaml.safe_load((home / "workspace.yaml").read_text()) == CODE_LOCATION
        assert stored_cursor(instance) == cursor
        # The daemon's first tick under `qraft up` starts from that cursor: nothing is computed again.
        sensor = defs.resolve_sensor_def("qraft_window_sensor")
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=stored_cursor(instance),
                                                         resources=defs.resources))
        assert tick.run_requests == []
    finally:
        instance.dispose()
