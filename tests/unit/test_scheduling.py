"""plan_windows: which windows are handed out, when, and under which run keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from qraft_core.config import PartitionsConfig
from qraft_core.scheduling import (
    EPOCH,
    LandingObservation,
    WindowPlan,
    WindowRequest,
    ceil_to,
    floor_to,
    observe_landing,
    plan_windows,
)

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NOTHING = LandingObservation(None, None, None)
CONFIG = PartitionsConfig(
    interval_minutes=1, start=T0, allowed_lateness_s=30, max_windows_per_run=3, max_reopen_windows=5
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def z(minutes: float) -> str:
    """The ISO text plan_windows uses in cursors and run keys."""
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at(minutes).microsecond // 1000:03d}Z"


def closed(start: float, end: float) -> WindowRequest:
    return WindowRequest(at(start), at(end), "closed", f"closed:{z(start)}:{z(end)}")


def landed(first: float, last: float, landed_at: datetime = NOW) -> LandingObservation:
    return LandingObservation(at(first), at(last), landed_at)


def plan(
    cursor: dict,
    seen: LandingObservation,
    now: datetime = NOW,
    config: PartitionsConfig = CONFIG,
    first_window: datetime = T0,
    waiting: tuple[tuple[datetime, datetime], ...] = (),
) -> WindowPlan:
    result = plan_windows(cursor, seen, now, config, first_window, waiting)
    json.dumps(result.cursor)  # the cursor must survive being stored as JSON
    return result


def test_floor_and_ceil_to_the_interval():
    assert floor_to(at(3.99), timedelta(minutes=1)) == at(3)
    assert ceil_to(at(3.01), timedelta(minutes=1)) == at(4)
    assert ceil_to(at(3), timedelta(minutes=1)) == at(3)
    assert floor_to(at(7), timedelta(minutes=5)) == at(5)


def test_windows_close_once_the_watermark_passes_them_in_chunks_with_deterministic_keys():
    result = plan({}, landed(0.2, 5 + 40 / 60))
    # Watermark: 00:05:40 - 30 s = 00:05:10, so [00:00, 00:05) is closed; 3 windows per run.
    assert result.requests == [closed(0, 3), closed(3, 5)]
    assert result.requests[0].run_key == "closed:2026-01-05T00:00:00.000Z:2026-01-05T00:03:00.000Z"
    assert result.skipped_late == 0
    assert result.cursor == {
        "through": z(5),
        "landed_seen": "2026-01-05T12:00:00.000Z",
        "max_event_time": z(5 + 40 / 60),
        "quiet_since": "2026-01-05T12:00:00.000Z",
    }
    assert plan({}, landed(0.2, 5 + 40 / 60)) == result


def test_nothing_is_handed_out_twice():
    first = plan({}, landed(0.2, 5 + 40 / 60))
    again = plan(first.cursor, NOTHING, NOW + timedelta(seconds=10))
    assert again.requests == []
    assert again.cursor["through"] == z(5)


def test_allowed_lateness_holds_back_the_last_windows():
    lenient = CONFIG.model_copy(update={"allowed_lateness_s": 150})
    assert plan({}, landed(0, 5.5), config=lenient).requests == [closed(0, 3)]


def test_a_quiet_stream_closes_the_window_holding_its_last_event():
    first = plan({}, landed(0.2, 5 + 40 / 60))
    not_yet = plan(first.cursor, NOTHING, NOW + timedelta(seconds=29))
    assert not_yet.requests == []
    quiet = plan(not_yet.cursor, NOTHING, NOW + timedelta(seconds=30))
    assert quiet.requests == [closed(5, 6)]
    assert quiet.cursor["through"] == z(6)
    assert quiet.cursor["quiet_since"] == "2026-01-05T12:00:00.000Z"


def test_an_event_exactly_on_a_boundary_closes_its_own_window_when_quiet():
    first = plan({}, landed(0, 6))
    assert first.requests == [closed(0, 3), closed(3, 5)]
    quiet = plan(first.cursor, NOTHING, NOW + timedelta(minutes=1))
    assert quiet.requests == [closed(5, 7)]


def test_new_landings_restart_the_quiet_clock():
    first = plan({}, landed(0, 2.5))
    later = NOW + timedelta(seconds=20)
    more = plan(first.cursor, landed(2.6, 2.7, landed_at=later), later)
    assert more.requests == []
    assert more.cursor["quiet_since"] == "2026-01-05T12:00:20.000Z"
    assert plan(more.cursor, NOTHING, later + timedelta(seconds=29)).requests == []
    assert plan(more.cursor, NOTHING, later + timedelta(seconds=30)).requests == [closed(2, 3)]


def test_late_data_reopens_its_window_and_every_window_after_it_up_to_through():
    first = plan({}, landed(0, 7))
    assert first.cursor["through"] == z(6)
    late_at = NOW + timedelta(seconds=5)
    late = plan(first.cursor, landed(2.5, 2.75, landed_at=late_at), late_at)
    marker = "2026-01-05T12:00:05.000Z"
    assert late.requests == [
        WindowRequest(at(2), at(5), "late", f"late:{z(2)}:{z(5)}:{marker}"),
        WindowRequest(at(5), at(6), "late", f"late:{z(5)}:{z(6)}:{marker}"),
    ]
    assert late.skipped_late == 0
    assert late.cursor["through"] == z(6)
    assert late.cursor["landed_seen"] == marker
    # Seen once, the late landing is not reopened again.
    assert plan(late.cursor, NOTHING, late_at + timedelta(seconds=1)).requests == []


def test_late_data_and_new_closed_windows_in_one_plan():
    first = plan({}, landed(0, 4))
    later = NOW + timedelta(seconds=5)
    both = plan(first.cursor, landed(1.5, 9, landed_at=later), later)
    assert [(r.reason, r.start, r.end) for r in both.requests] == [
        ("late", at(1), at(3)),
        ("closed", at(3), at(6)),
        ("closed", at(6), at(8)),
    ]
    assert both.cursor["max_event_time"] == z(9)


def test_late_events_older_than_the_reach_reopen_nothing_and_are_counted():
    first = plan({}, landed(0, 12))
    assert first.cursor["through"] == z(11)
    cursor = first.cursor
    # A backfill trickling in below the reach: 5 windows back from 00:11 is 00:06.
    for tick in range(1, 4):
        later = NOW + timedelta(seconds=10 * tick)
        late = plan(cursor, landed(2.5, 3 + tick / 4, landed_at=later), later)
        assert late.requests == []
        assert late.skipped_late == 4  # windows 00:02 to 00:05
        cursor = late.cursor


def test_late_events_before_the_first_partition_reopen_nothing():
    first = plan({}, landed(0, 12))
    later = NOW + timedelta(seconds=10)
    late = plan(first.cursor, landed(-120, -60, landed_at=later), later)
    assert late.requests == []
    assert late.skipped_late == 126  # from 22:00 the day before up to the reach at 00:06


def land(store, times: list[datetime], landed_at: datetime, tag: str) -> None:
    n = len(times)
    ms = pl.Datetime("ms", "UTC")
    store.insert("raw_events", pl.DataFrame(
        {"event_id": [f"{tag}-{i}" for i in range(n)], "source": ["s"] * n, "type": ["t"] * n,
         "timestamp": times, "ingest_time": times, "landed_at": [landed_at] * n, "payload": ["{}"] * n,
         "parser_version": ["v"] * n, "raw_checksum": [""] * n},
        schema_overrides={"timestamp": ms, "ingest_time": ms, "landed_at": ms},
    ))


def test_only_windows_in_reach_that_received_late_events_reopen(memory_store):
    land(memory_store, [at(m + 0.5) for m in range(12)], NOW, "live")
    first = plan({}, observe_landing(memory_store, EPOCH))
    assert first.cursor["through"] == z(11)
    later = NOW + timedelta(seconds=10)
    # Old backfill rows, one late row in reach (00:08) and the live stream going on, in one landing.
    land(memory_store, [at(-30), at(2.5), at(8.5), at(12.5), at(13.5)], later, "mixed")
    late = plan(first.cursor, observe_landing(memory_store, NOW), later)
    marker = "2026-01-05T12:00:10.000Z"
    assert late.requests == [
        WindowRequest(at(8), at(11), "late", f"late:{z(8)}:{z(11)}:{marker}"),
        closed(11, 13),
    ]
    assert late.skipped_late == 36  # from 23:30 the day before up to the reach at 00:06
    # More old rows on the next tick: nothing is reopened again, the live windows go on.
    again_at = later + timedelta(seconds=10)
    land(memory_store, [at(1.5), at(14.5)], again_at, "more")
    again = plan(late.cursor, observe_landing(memory_store, later), again_at)
    assert again.requests == [closed(13, 14)]


def test_a_late_range_requested_and_not_yet_started_is_not_requested_again():
    first = plan({}, landed(0, 12))
    later = NOW + timedelta(seconds=10)
    late = plan(first.cursor, landed(8.5, 8.5, landed_at=later), later)
    assert [r.run_key for r in late.requests] == [f"late:{z(8)}:{z(11)}:2026-01-05T12:00:10.000Z"]
    waiting = ((at(8), at(11)),)
    # More late events in those windows while that run waits: it reads them when it starts.
    tick = later + timedelta(seconds=10)
    again = plan(late.cursor, landed(8.7, 9.5, landed_at=tick), tick, waiting=waiting)
    assert again.requests == []
    # Once it started, late events are requested again, from the first window it does not cover.
    tick += timedelta(seconds=10)
    started = plan(again.cursor, landed(9.5, 9.5, landed_at=tick), tick)
    assert [r.run_key for r in started.requests] == [f"late:{z(9)}:{z(11)}:2026-01-05T12:00:30.000Z"]
    partly = plan(again.cursor, landed(7.5, 7.5, landed_at=tick), tick, waiting=((at(6), at(9)),))
    assert [r.run_key for r in partly.requests] == [f"late:{z(9)}:{z(11)}:2026-01-05T12:00:30.000Z"]


def test_with_max_reopen_windows_zero_nothing_is_reopened():
    config = CONFIG.model_copy(update={"max_reopen_windows": 0})
    first = plan({}, landed(0, 4), config=config)
    later = NOW + timedelta(seconds=5)
    late = plan(first.cursor, landed(1, 1, landed_at=later), later, config=config)
    assert late.requests == []
    assert late.skipped_late == 2


def test_windows_never_pass_the_partition_end():
    config = CONFIG.model_copy(update={"end": at(4)})
    first = plan({}, landed(0, 10), config=config)
    assert first.requests == [closed(0, 3), closed(3, 4)]
    quiet = plan(first.cursor, NOTHING, NOW + timedelta(minutes=5), config=config)
    assert quiet.requests == []
    assert quiet.cursor["through"] == z(4)


def test_the_first_plan_starts_where_the_data_starts():
    result = plan({}, landed(600.5, 605), first_window=at(-1440))
    assert result.requests[0] == closed(600, 603)
    assert result.cursor["through"] == z(604)


def test_data_before_the_first_partition_is_not_planned():
    result = plan({}, landed(-10, 3))
    assert result.requests == [closed(0, 2)]


def test_no_data_no_windows():
    result = plan({}, NOTHING)
    assert result.requests == []
    assert result.cursor["max_event_time"] is None


def test_observe_landing_sees_only_rows_landed_after_the_mark(memory_store):
    ms = pl.Datetime("ms", "UTC")
    rows = pl.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "source": ["s"] * 3,
            "type": ["t"] * 3,
            "timestamp": [at(5), at(1), at(9)],
            "ingest_time": [at(5), at(1), at(9)],
            "landed_at": [NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)],
            "payload": ["{}"] * 3,
            "parser_version": ["v"] * 3,
            "raw_checksum": [""] * 3,
        },
        schema_overrides={"timestamp": ms, "ingest_time": ms, "landed_at": ms},
    )
    memory_store.insert("raw_events", rows)
    assert observe_landing(memory_store, NOW) == LandingObservation(at(1), at(9), NOW + timedelta(seconds=2))
    assert observe_landing(memory_store, NOW + timedelta(seconds=2)) == NOTHING


def test_a_plan_before_any_data_does_not_pin_the_start_to_the_first_partition():
    empty = plan({}, NOTHING, first_window=at(-1440))
    result = plan(empty.cursor, landed(600.5, 605), first_window=at(-1440))
    assert result.requests[0] == closed(600, 603)
