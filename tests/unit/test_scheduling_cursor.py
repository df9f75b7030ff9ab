"""Reading the window sensor's stored cursor (`read_cursor`) and the rolling partition range."""

from datetime import UTC, datetime, timedelta

import pytest

from qraft_core.config import PartitionsConfig
from qraft_core.scheduling import LandingObservation, partition_start, plan_windows, read_cursor

GOOD = ('{"through": "2026-01-05T00:07:00.000Z", "landed_seen": "2026-01-05T00:09:00.000Z", '
        '"max_event_time": "2026-01-05T00:06:28.000Z", "quiet_since": "2026-01-05T00:09:00.000Z", '
        '"ahead": {"start": "2026-01-05T01:00:00.000Z", "count": 3}, '
        '"heal": {"from": "2026-01-05T00:00:00.000Z", "failures_seen": 1767571200.5}}')


def test_a_well_formed_cursor_is_read_unchanged():
    reading = read_cursor(GOOD)
    assert reading.warnings == [] and reading.dropped == frozenset()
    assert reading.cursor == {
        "through": "2026-01-05T00:07:00.000Z", "landed_seen": "2026-01-05T00:09:00.000Z",
        "max_event_time": "2026-01-05T00:06:28.000Z", "quiet_since": "2026-01-05T00:09:00.000Z",
        "ahead": {"start": "2026-01-05T01:00:00.000Z", "count": 3},
        "heal": {"from": "2026-01-05T00:00:00.000Z", "failures_seen": 1767571200.5},
    }


@pytest.mark.parametrize("text", [None, ""])
def test_no_cursor_is_an_empty_one_without_warnings(text):
    assert read_cursor(text).cursor == {"heal": {}}
    assert read_cursor(text).warnings == []


@pytest.mark.parametrize(("text", "shown"), [
    ("garbage", "'garbage' (not JSON)"), ("[]", "'[]'"), ('"str"', "'\"str\"'"), ("null", "'null'"),
    ("[" * 100_000, "'" + "[" * 40 + "' (not JSON)"),
])
def test_a_cursor_that_is_not_an_object_is_dropped_whole_with_one_warning(text, shown):
    reading = read_cursor(text)
    assert reading.cursor == {"heal": {}}
    assert reading.dropped == {"through", "landed_seen", "max_event_time", "quiet_since", "ahead", "heal"}
    assert reading.warnings == [
        f"window sensor cursor: expected a JSON object, got {shown}; starting from an empty cursor"]


@pytest.mark.parametrize(("text", "key", "warning"), [
    ('{"through": "not a time"}', "through", "'through' expected an ISO 8601 time or null, got \"not a time\""),
    ('{"through": 5}', "through", "'through' expected an ISO 8601 time or null, got 5"),
    ('{"landed_seen": [1]}', "landed_seen", "'landed_seen' expected an ISO 8601 time or null, got [1]"),
    ('{"heal": []}', "heal", "'heal' expected an object, got []"),
    ('{"heal": {"from": "x"}}', "heal.from", "'heal.from' expected an ISO 8601 time, got \"x\""),
    ('{"heal": {"failures_seen": "abc"}}', "heal.failures_seen",
     "'heal.failures_seen' expected a Unix timestamp (a number), got \"abc\""),
    ('{"heal": {"failures_seen": true}}', "heal.failures_seen",
     "'heal.failures_seen' expected a Unix timestamp (a number), got true"),
    ('{"ahead": {"start": "2026-01-05T01:00:00Z"}}', "ahead",
     "'ahead' expected an object {\"start\": ISO 8601 time, \"count\": whole number}, "
     "got {\"start\": \"2026-01-05T01:00:00Z\"}"),
    ('{"ahead": {"start": "2026-01-05T01:00:00Z", "count": -1}}', "ahead",
     "'ahead' expected an object {\"start\": ISO 8601 time, \"count\": whole number}, "
     "got {\"start\": \"2026-01-05T01:00:00Z\", \"count\": -1}"),
])
def test_each_malformed_part_is_dropped_with_one_warning_naming_it(text, key, warning):
    reading = read_cursor(text)
    assert reading.dropped == {key}
    assert reading.warnings == [f"window sensor cursor: {warning}; dropped"]
    assert reading.cursor == {"heal": {}}


def test_times_are_normalized_and_unknown_keys_ignored():
    reading = read_cursor('{"landed_seen": "2026-01-05T01:00:00", "max_event_time": "2026-01-05T06:00:00+05:00", '
                          '"through": null, "next": 1}')
    assert reading.warnings == []
    assert reading.cursor == {"landed_seen": "2026-01-05T01:00:00.000Z",
                              "max_event_time": "2026-01-05T01:00:00.000Z", "heal": {}}


def test_a_cursor_read_back_plans_without_error():
    """What used to break a plan after being accepted (an `ahead` without `count`) no longer reaches it."""
    config = PartitionsConfig(interval_minutes=1, allowed_lateness_s=60, start=datetime(2026, 1, 5, tzinfo=UTC),
                              end=datetime(2026, 1, 6, tzinfo=UTC))
    cursor = read_cursor('{"through": "2026-01-05T00:07:00Z", "ahead": {"start": "2026-01-05T01:00:00Z"}}').cursor
    cursor.pop("heal")
    seen = LandingObservation(None, None, None, ahead_start=datetime(2026, 1, 5, 1, tzinfo=UTC), ahead_count=2)
    plan = plan_windows(cursor, seen, datetime(2026, 1, 5, 2, tzinfo=UTC), config, config.start)
    assert plan.cursor["ahead"] == {"start": "2026-01-05T01:00:00.000Z", "count": 2}


NOW = datetime(2026, 3, 29, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("interval", "max_partitions", "first"), [
    (1, 30, datetime(2026, 3, 29, 11, 31, tzinfo=UTC)),  # 30 minutes: on the window grid
    (2, 60, datetime(2026, 3, 29, 10, 2, tzinfo=UTC)),  # 2 hours
    (60, 23, datetime(2026, 3, 28, 14, tzinfo=UTC)),  # 23 hours
    (60, 24, datetime(2026, 3, 29, tzinfo=UTC)),  # a day: whole days
    (1, 30_000, datetime(2026, 3, 9, tzinfo=UTC)),  # about 20 days: whole days
])
def test_the_rolling_range_always_holds_the_current_window_and_at_most_max_partitions(interval, max_partitions, first):
    config = PartitionsConfig(interval_minutes=interval, max_partitions=max_partitions,
                              start=datetime(2026, 1, 1, tzinfo=UTC))
    start = partition_start(config, NOW)
    assert start == first
    current = datetime(2026, 3, 29, 12, 0, tzinfo=UTC) if interval < 60 else datetime(2026, 3, 29, 12, tzinfo=UTC)
    assert start <= current
    assert (current - start) // timedelta(minutes=interval) + 1 <= max_partitions


def test_a_short_rolling_range_hands_out_the_closed_windows():
    """With 30 one-minute windows kept, windows that closed within them are requested (none used to be)."""
    config = PartitionsConfig(interval_minutes=1, max_partitions=30, allowed_lateness_s=0,
                              start=datetime(2026, 1, 1, tzinfo=UTC))
    landed = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    seen = LandingObservation(datetime(2026, 3, 29, 11, 50, tzinfo=UTC), datetime(2026, 3, 29, 11, 59, 50, tzinfo=UTC),
                              landed)
    plan = plan_windows({}, seen, NOW, config, partition_start(config, NOW))
    assert [(r.start.isoformat(), r.end.isoformat(), r.reason) for r in plan.requests] == [
        ("2026-03-29T11:50:00+00:00", "2026-03-29T12:00:00+00:00", "closed")]
    assert plan.skipped_late == 0


def test_a_replay_older_than_the_rolling_range_says_how_large_max_partitions_must_be():
    from qraft_core.config import ConfigError
    from qraft_core.replays import replay_window

    config = PartitionsConfig(interval_minutes=1, max_partitions=1440, start=datetime(2026, 1, 1, tzinfo=UTC))
    assert partition_start(config, NOW) == datetime(2026, 3, 29, tzinfo=UTC)
    old = datetime(2026, 3, 27, 12, tzinfo=UTC)
    with pytest.raises(ConfigError) as refused:
        replay_window(old, old + timedelta(hours=1), config, NOW)
    needed = 2 * 1440 + 1 + 1440  # 12:00 two days before to 12:00:30 now, then one day of slack
    assert str(refused.value) == (
        "replay window [2026-03-27T12:00:00.000Z, 2026-03-27T13:00:00.000Z) starts before the oldest partition "
        f"kept (2026-03-29T00:00:00.000Z, partitions.max_partitions 1440): raise partitions.max_partitions in "
        f"qraft.yaml to at least {needed} to replay it")
    raised = config.model_copy(update={"max_partitions": needed})
    assert partition_start(raised, NOW) <= old
    assert replay_window(old, old + timedelta(hours=1), raised, NOW) == (old, old + timedelta(hours=1))
