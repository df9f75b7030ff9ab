"""The window sensor against real chDB with a stored cursor whose times lie outside what it can have written.

A `through` before the first partition is raised to it and one off the window grid is floored to it;
a time later than the end of the partitions or the clock is dropped. Each change is one warning in
the tick's log, and the runs requested (re-runs of failed runs too) all lie inside the partitions,
on the grid.
"""

import json
from datetime import datetime

import pytest
from dagster import build_sensor_context

from qraft_core.events import iso
from qraft_core.lander import land_batch
from qraft_core.runtime import Runtime
from tests.dagster.test_sensor_cursor_damage import FIRST_RUN, _trades

PREFIX = "window sensor cursor: "


def _landed(config_dir, monkeypatch, interval_minutes: int = 1) -> str:
    """300 trades over 00:00–00:06:28 in the test's own store; returns the newest landing time."""
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    monkeypatch.setenv("QRAFT_PARTITIONS_INTERVAL_MINUTES", str(interval_minutes))
    monkeypatch.setenv("QRAFT_MLFLOW_ENABLED", "false")
    rt = Runtime.load(config_dir)
    rt.store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(300, 1.3))]).raw_events)
    with rt.store.session():
        extent = rt.store.extent("raw_events", "landed_at", [])
    assert extent is not None
    return iso(extent[1])


def _tick(config_dir, tmp_path, capfd, cursor: dict):
    """One sensor tick from `cursor`: its run keys, the cursor it stores and the cursor warnings it logs."""
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import open_instance

    defs = build_definitions(str(config_dir))
    sensor = defs.resolve_sensor_def("qraft_window_sensor")
    context = build_sensor_context(instance=open_instance(tmp_path / "dagster"), cursor=json.dumps(cursor),
                                   resources=defs.resources, definitions=defs)
    capfd.readouterr()
    tick = sensor.evaluate_tick(context)
    # The tick's log goes to Dagster's own handler on stderr, one line each.
    warnings = [line[line.index(PREFIX):] for line in capfd.readouterr().err.splitlines() if PREFIX in line]
    return [r.run_key for r in tick.run_requests], json.loads(tick.cursor), warnings


@pytest.mark.parametrize(("through", "warning"), [
    # partitions.start moved forward, or a rolling start passed a stopped sensor
    ("2026-01-04T23:30:00Z", "'through' 2026-01-04T23:30:00.000Z is before the first partition "
                             "(2026-01-05T00:00:00.000Z); raised to it"),
    ("1970-01-01T00:00:00Z", "'through' 1970-01-01T00:00:00.000Z is before the first partition "
                             "(2026-01-05T00:00:00.000Z); raised to it"),
    # a hand edit, or a clock that once ran ahead: resumes where the data starts (nothing was materialized)
    ("2099-01-01T00:00:00Z", "'through' 2099-01-01T00:00:00.000Z is later than the end of the partitions "
                             "(2026-01-05T03:00:00.000Z); dropped"),
])
def test_a_through_outside_the_partitions_requests_only_windows_inside_them(
        config_dir, monkeypatch, tmp_path, capfd, through, warning):
    _landed(config_dir, monkeypatch)
    run_keys, stored, warnings = _tick(config_dir, tmp_path, capfd, {"through": through})
    assert run_keys == [FIRST_RUN]
    assert stored["through"] == "2026-01-05T00:07:00.000Z"
    assert warnings == [PREFIX + warning]


def test_a_landed_seen_in_the_future_is_dropped_so_what_landed_is_seen(config_dir, monkeypatch, tmp_path, capfd):
    _landed(config_dir, monkeypatch)
    run_keys, stored, warnings = _tick(config_dir, tmp_path, capfd, {"landed_seen": "2099-01-01T00:00:00Z"})
    assert run_keys == [FIRST_RUN]
    assert stored["landed_seen"] < "2099"
    assert warnings == [PREFIX + "'landed_seen' 2099-01-01T00:00:00.000Z is later than the current time plus "
                                 "a day (the lander's clock); dropped"]


def test_a_watermark_ahead_of_the_clock_is_kept(config_dir, monkeypatch, tmp_path, capfd):
    # A file's events may be dated ahead of any clock: the watermark is the data's, and windows close up
    # to the end of the partitions tick by tick (when it was dropped, no window closed again).
    newest = _landed(config_dir, monkeypatch)
    cursor = {"through": "2026-01-05T00:07:00Z", "landed_seen": newest, "max_event_time": "2099-01-01T00:00:00Z"}
    run_keys, stored, warnings = _tick(config_dir, tmp_path, capfd, cursor)
    assert run_keys == ["closed:2026-01-05T00:07:00.000Z:2026-01-05T01:07:00.000Z",
                        "closed:2026-01-05T01:07:00.000Z:2026-01-05T02:07:00.000Z",
                        "closed:2026-01-05T02:07:00.000Z:2026-01-05T03:00:00.000Z"]
    assert (stored["through"], stored["max_event_time"], warnings) == (
        "2026-01-05T03:00:00.000Z", "2099-01-01T00:00:00.000Z", [])


@pytest.mark.parametrize(("interval", "through", "run_key", "floored"), [
    # a 1-minute sensor's cursor after partitions.interval_minutes became 15: window 00:00 is handed out
    (15, "2026-01-05T00:07:00Z", "closed:2026-01-05T00:00:00.000Z:2026-01-05T00:15:00.000Z",
     "2026-01-05T00:00:00.000Z"),
    (1, "2026-01-05T00:03:30Z", "closed:2026-01-05T00:03:00.000Z:2026-01-05T00:07:00.000Z",
     "2026-01-05T00:03:00.000Z"),
])
def test_a_through_off_the_window_grid_is_floored_to_it(
        config_dir, monkeypatch, tmp_path, capfd, interval, through, run_key, floored):
    newest = _landed(config_dir, monkeypatch, interval)
    cursor = {"through": through, "landed_seen": newest, "max_event_time": "2026-01-05T00:06:28Z"}
    run_keys, _, warnings = _tick(config_dir, tmp_path, capfd, cursor)
    assert run_keys == [run_key]
    assert warnings == [PREFIX + f"'through' {iso(datetime.fromisoformat(through))} is off the window grid "
                                 f"(partitions.interval_minutes {interval}); floored to {floored}"]


def test_a_failed_run_is_rerun_only_over_windows_inside_a_range_whose_start_moved_past_it(
        config_dir, monkeypatch, tmp_path):
    import re

    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.execute import execute_request, open_instance

    _landed(config_dir, monkeypatch)
    instance = open_instance(tmp_path / "dagster")
    detectors = config_dir / "detectors.yaml"
    good = detectors.read_text()
    detectors.write_text(re.sub(r"algorithm: \w+", "algorithm: NoSuchAlgorithm", good, count=1))  # a broken deploy
    defs = build_definitions(str(config_dir))
    first = defs.resolve_sensor_def("qraft_window_sensor").evaluate_tick(
        build_sensor_context(instance=instance, resources=defs.resources))
    assert [r.run_key for r in first.run_requests] == [FIRST_RUN]
    failed = execute_request(defs, instance, first.run_requests[0])
    assert not failed.success

    detectors.write_text(good)
    monkeypatch.setenv("QRAFT_PARTITIONS_START", "2026-01-05T00:03:00Z")  # the range now starts later
    defs = build_definitions(str(config_dir))
    heal = defs.resolve_sensor_def("qraft_window_sensor").evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, resources=defs.resources))
    assert [r.run_key for r in heal.run_requests] == [
        f"retry:2026-01-05T00:03:00.000Z:2026-01-05T00:07:00.000Z:{failed.run_id}"]
    assert execute_request(defs, instance, heal.run_requests[0]).success
