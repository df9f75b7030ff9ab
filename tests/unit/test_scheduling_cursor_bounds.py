"""Cursor times the window sensor cannot have written (`bound_cursor`), and the windows planned from them."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.config import PartitionsConfig
from qraft_core.scheduling import LandingObservation, bound_cursor, plan_windows, read_cursor

T0 = datetime(2026, 1, 5, tzinfo=UTC)
END = datetime(2026, 1, 5, 3, tzinfo=UTC)
SKEW = timedelta(seconds=300)
BOUNDED = PartitionsConfig(interval_minutes=1, start=T0, end=END, allowed_lateness_s=0)
OPEN = PartitionsConfig(interval_minutes=1, start=T0, allowed_lateness_s=0)
PREFIX = "window sensor cursor: "
CLOCK = "the current time plus the allowed clock skew (300 s)"
NOTHING = LandingObservation(None, None, None)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return T0.replace(hour=hour, minute=minute, second=second)


def bound(text: str, now: datetime, config: PartitionsConfig = BOUNDED):
    return bound_cursor(read_cursor(text), now, config, T0, SKEW)


def keys(plan) -> list[str]:
    return [request.run_key for request in plan.requests]


def test_a_cursor_inside_the_bounds_is_kept_as_it_is():
    text = ('{"through": "2026-01-05T00:07:00Z", "landed_seen": "2026-01-05T01:04:59Z", '
            '"max_event_time": "2026-01-05T00:06:28Z", "quiet_since": "2026-01-05T01:04:59Z", '
            '"heal": {"from": "2026-01-05T00:00:00Z"}}')
    assert bound(text, at(1)) == read_cursor(text)


@pytest.mark.parametrize(("through", "config", "warning"), [
    ("2026-01-04T23:30:00Z", BOUNDED, "'through' 2026-01-04T23:30:00.000Z is before the first partition "
                                      "(2026-01-05T00:00:00.000Z); raised to it"),
    ("1970-01-01T00:00:30Z", OPEN, "'through' 1970-01-01T00:00:30.000Z is before the first partition "
                                   "(2026-01-05T00:00:00.000Z); raised to it"),
])
def test_a_through_before_the_first_partition_is_raised_to_it(through, config, warning):
    reading = bound(f'{{"through": "{through}"}}', at(1), config)
    assert reading.cursor == {"through": "2026-01-05T00:00:00.000Z", "heal": {}}
    assert reading.dropped == frozenset()
    assert reading.warnings == [PREFIX + warning]


@pytest.mark.parametrize(("config", "through", "what"), [
    (BOUNDED, "2026-01-05T03:01:00Z", "the end of the partitions (2026-01-05T03:00:00.000Z)"),
    (OPEN, "2026-01-05T01:06:00Z", CLOCK),
    (OPEN, "2099-01-01T00:00:00Z", CLOCK),
])
def test_a_through_later_than_the_sensor_can_have_written_is_dropped(config, through, what):
    reading = bound(f'{{"through": "{through}"}}', at(1), config)
    assert reading.cursor == {"heal": {}}
    assert reading.dropped == {"through"}
    assert reading.warnings == [PREFIX + f"'through' {through[:-1]}.000Z is later than {what}; dropped"]


@pytest.mark.parametrize(("config", "through"), [(BOUNDED, "2026-01-05T03:00:00Z"), (OPEN, "2026-01-05T01:05:00Z")])
def test_a_through_at_the_end_or_within_the_clock_skew_is_kept(config, through):
    assert bound(f'{{"through": "{through}"}}', at(1), config).warnings == []


@pytest.mark.parametrize(("interval", "through", "floored"), [
    (15, "2026-01-05T00:07:00Z", "2026-01-05T00:00:00.000Z"),  # interval_minutes changed from 1 to 15
    (1, "2026-01-05T01:10:30Z", "2026-01-05T01:10:00.000Z"),
])
def test_a_through_off_the_window_grid_is_floored_to_it(interval, through, floored):
    config = BOUNDED.model_copy(update={"interval_minutes": interval})
    reading = bound(f'{{"through": "{through}"}}', at(2), config)
    assert reading.cursor == {"through": floored, "heal": {}}
    assert reading.warnings == [PREFIX + f"'through' {through[:-1]}.000Z is off the window grid "
                                         f"(partitions.interval_minutes {interval}); floored to {floored}"]


def test_a_quiet_since_later_than_the_clock_is_dropped():
    reading = bound('{"quiet_since": "2099-01-01T00:00:00Z"}', at(1), OPEN)
    assert reading.cursor == {"heal": {}}
    assert reading.dropped == {"quiet_since"}
    assert reading.warnings == [PREFIX + f"'quiet_since' 2099-01-01T00:00:00.000Z is later than {CLOCK}; dropped"]


def test_a_landing_time_is_dropped_only_a_day_ahead_of_the_clock():
    """`landed_seen` is stamped by the lander's clock: minutes apart from the sensor's is another host,
    not a mark to drop (each tick would read every landing again from the start)."""
    assert bound('{"landed_seen": "2026-01-05T01:10:00Z"}', at(1), OPEN).warnings == []
    reading = bound('{"landed_seen": "2026-01-06T01:00:01Z"}', at(1), OPEN)
    assert reading.dropped == {"landed_seen"}
    assert reading.warnings == [PREFIX + "'landed_seen' 2026-01-06T01:00:01.000Z is later than the current time "
                                         "plus a day (the lander's clock); dropped"]


def test_a_watermark_ahead_of_the_clock_is_kept_and_windows_go_on_closing_up_to_the_current_one():
    """Events a file dates ahead of the clock set the watermark; the windows up to the current one
    close tick by tick with no new landing (when the watermark was dropped, none closed again)."""
    text = '{"through": "2026-01-05T00:00:00Z", "max_event_time": "2026-01-06T18:00:00Z"}'
    reading = bound(text, at(2), OPEN)
    assert (reading.cursor, reading.warnings) == (read_cursor(text).cursor, [])
    config = OPEN.model_copy(update={"max_windows_per_run": 60, "max_runs_per_tick": 1})
    first = plan_windows(reading.cursor, NOTHING, at(2), config, T0)
    second = plan_windows(bound_cursor(read_cursor(json.dumps(first.cursor)), at(2), config, T0, SKEW).cursor,
                          NOTHING, at(2), config, T0)
    assert keys(first) + keys(second) == ["closed:2026-01-05T00:00:00.000Z:2026-01-05T01:00:00.000Z",
                                          "closed:2026-01-05T01:00:00.000Z:2026-01-05T02:00:00.000Z"]


def test_the_first_window_handed_out_is_dropped_when_later_than_the_end_and_floored_to_the_grid():
    late = bound('{"heal": {"from": "2026-01-05T04:00:00Z", "failures_seen": 1.5}}', at(1))
    assert late.cursor == {"heal": {"failures_seen": 1.5}}
    assert late.dropped == {"heal.from"}
    assert late.warnings == [PREFIX + "'heal.from' 2026-01-05T04:00:00.000Z is later than the end of the "
                                      "partitions (2026-01-05T03:00:00.000Z); dropped"]
    config = BOUNDED.model_copy(update={"interval_minutes": 15})
    off_grid = bound_cursor(read_cursor('{"heal": {"from": "2026-01-05T00:07:00Z"}}'), at(1), config, T0, SKEW)
    assert off_grid.cursor == {"heal": {"from": "2026-01-05T00:00:00.000Z"}}


def test_bounding_leaves_the_reading_it_was_given_unchanged():
    reading = read_cursor('{"through": "2026-01-04T00:00:00Z", "heal": {"from": "2026-01-05T04:00:00Z"}}')
    bound_cursor(reading, at(1), BOUNDED, T0, SKEW)
    assert reading.cursor == {"through": "2026-01-04T00:00:00.000Z", "heal": {"from": "2026-01-05T04:00:00.000Z"}}


# plan_windows holds a `through` it is given (the sensor's resumption after the newest materialized
# window, another caller's cursor) to the grid inside the partitions as well.

def test_a_plan_from_a_through_before_the_first_partition_requests_no_window_before_it():
    seen = LandingObservation(at(0), at(0, 6, 28), at(1))
    plan = plan_windows({"through": "1970-01-01T00:00:00.000Z"}, seen, at(1), BOUNDED, T0)
    assert keys(plan) == ["closed:2026-01-05T00:00:00.000Z:2026-01-05T00:07:00.000Z"]
    assert plan.skipped_late == 0


def test_a_plan_from_a_through_off_the_grid_hands_out_the_window_it_cut():
    config = BOUNDED.model_copy(update={"interval_minutes": 15})
    cursor = {"through": "2026-01-05T00:07:00.000Z", "max_event_time": "2026-01-05T00:59:59.000Z"}
    plan = plan_windows(cursor, NOTHING, at(1, 30), config, T0)
    assert keys(plan) == ["closed:2026-01-05T00:00:00.000Z:2026-01-05T01:00:00.000Z"]
    assert plan.cursor["through"] == "2026-01-05T01:00:00.000Z"


def test_a_plan_from_a_through_past_the_end_reopens_no_window_past_it():
    seen = LandingObservation(at(2, 59, 30), at(2, 59, 30), at(4))
    plan = plan_windows({"through": "2026-01-05T05:00:00.000Z"}, seen, at(4), BOUNDED, T0)
    assert keys(plan) == ["late:2026-01-05T02:59:00.000Z:2026-01-05T03:00:00.000Z:2026-01-05T04:00:00.000Z"]
    assert plan.cursor["through"] == "2026-01-05T03:00:00.000Z"


def test_a_plan_keeps_the_windows_handed_out_when_the_watermark_was_dropped():
    plan = plan_windows({"through": "2026-01-05T00:07:00.000Z"}, NOTHING, at(1), BOUNDED, T0)
    assert plan.requests == []
    assert (plan.cursor["through"], plan.cursor["max_event_time"]) == ("2026-01-05T00:07:00.000Z", None)
