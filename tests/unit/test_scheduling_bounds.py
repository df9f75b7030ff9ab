"""The window sensor's bounds: one outlier cannot move the watermark, one tick plans few runs,
and failed runs are re-run from the first window not materialized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from qraft_core.config import PartitionsConfig
from qraft_core.scheduling import (
    EPOCH,
    RUN_RETRIES,
    FailedRun,
    LandingObservation,
    WindowPlan,
    jump_bound,
    observe_landing,
    plan_retries,
    plan_windows,
)

T0 = datetime(2026, 1, 5, tzinfo=UTC)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)
CONFIG = PartitionsConfig(
    interval_minutes=1, start=T0, allowed_lateness_s=30, max_windows_per_run=3, max_reopen_windows=5
)
MS = pl.Datetime("ms", "UTC")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def land(store, times: list[datetime], landed_at: datetime, tag: str) -> None:
    n = len(times)
    store.insert("raw_events", pl.DataFrame(
        {"event_id": [f"{tag}-{i}" for i in range(n)], "source": ["s"] * n, "type": ["t"] * n,
         "timestamp": times, "ingest_time": times, "landed_at": [landed_at] * n, "payload": ["{}"] * n,
         "parser_version": ["v"] * n, "raw_checksum": [""] * n},
        schema_overrides={"timestamp": MS, "ingest_time": MS, "landed_at": MS},
    ))


class Sensor:
    """The sensor's loop without Dagster: observe the store, plan, keep the cursor, collect windows."""

    def __init__(self, store, config: PartitionsConfig = CONFIG) -> None:
        self.store, self.config, self.cursor = store, config, {}
        self.windows: list[datetime] = []
        self.skipped = 0

    def tick(self, now: datetime) -> WindowPlan:
        seen_mark = self.cursor.get("landed_seen")
        watermark = self.cursor.get("max_event_time")
        seen = observe_landing(
            self.store, datetime.fromisoformat(seen_mark.replace("Z", "+00:00")) if seen_mark else EPOCH,
            datetime.fromisoformat(watermark.replace("Z", "+00:00")) if watermark else None, jump_bound(self.config),
        )
        result = plan_windows(self.cursor, seen, now, self.config, T0)
        self.cursor = result.cursor
        self.skipped += result.skipped_late
        for request in result.requests:
            start = request.start
            while start < request.end:
                self.windows.append(start)
                start += self.config.interval
        return result


def test_one_event_dated_2999_does_not_close_the_windows_of_the_data_that_follows(memory_store):
    sensor = Sensor(memory_store, CONFIG.model_copy(update={"end": at(60)}))
    clock = NOW
    land(memory_store, [at(0.5), FAR_FUTURE], clock, "first")
    for minute in range(1, 60):  # the real stream goes on, one landing per tick
        sensor.tick(clock)
        clock += timedelta(seconds=10)
        land(memory_store, [at(minute + 0.25), at(minute + 0.75)], clock, f"m{minute}")
    sensor.tick(clock)
    assert sensor.cursor["ahead"] == {"start": "2999-01-01T00:00:00.000Z", "count": 1}
    # Lateness 30 s holds back the windows after 00:59:15 until the stream goes quiet.
    assert sensor.windows == [at(m) for m in range(59)]
    assert sensor.skipped == 0
    quiet = sensor.tick(clock + timedelta(seconds=30))
    assert [(r.start, r.end) for r in quiet.requests] == [(at(59), at(60))]
    assert sorted(sensor.windows) == [at(m) for m in range(60)]  # each window exactly once


def test_a_stream_resuming_after_a_long_gap_moves_the_watermark_once_more_events_arrive(memory_store):
    sensor = Sensor(memory_store)
    land(memory_store, [at(m) for m in range(10)] + [at(300), at(300.5)], NOW, "a")
    first = sensor.tick(NOW)
    assert first.cursor["ahead"] == {"start": "2026-01-05T05:00:00.000Z", "count": 2}
    assert sensor.windows == [at(m) for m in range(8)]
    later = NOW + timedelta(seconds=10)
    land(memory_store, [at(301), at(302)], later, "b")
    sensor.tick(later)
    assert "ahead" not in sensor.cursor
    # The watermark moved to where the stream resumed; the gap's empty windows close too,
    # in runs of 3 windows, at most max_runs_per_tick (10) runs per tick.
    assert sensor.cursor["max_event_time"] == "2026-01-05T05:00:00.000Z"
    assert sensor.windows[-1] == at(37)
    for step in range(1, 20):
        sensor.tick(later + timedelta(seconds=10 * step))
    assert sensor.cursor["max_event_time"] == "2026-01-05T05:02:00.000Z"
    assert sensor.windows == [at(m) for m in range(303)]  # quiet for 30 s: the last window closes too


def test_one_tick_requests_at_most_max_runs_per_tick(memory_store):
    config = CONFIG.model_copy(update={"max_runs_per_tick": 2})
    sensor = Sensor(memory_store, config)
    land(memory_store, [at(m / 2) for m in range(200)], NOW, "bulk")
    first = sensor.tick(NOW)
    assert [r.run_key for r in first.requests] == [
        "closed:2026-01-05T00:00:00.000Z:2026-01-05T00:03:00.000Z",
        "closed:2026-01-05T00:03:00.000Z:2026-01-05T00:06:00.000Z",
    ]
    second = sensor.tick(NOW + timedelta(seconds=10))
    assert [(r.start, r.end) for r in second.requests] == [(at(6), at(9)), (at(9), at(12))]


def test_with_an_open_end_no_window_past_the_current_time_is_closed():
    seen = LandingObservation(at(0), FAR_FUTURE, NOW, reach=FAR_FUTURE)
    config = CONFIG.model_copy(update={"max_runs_per_tick": 1000})
    result = plan_windows({}, seen, NOW, config, T0)
    assert result.requests[-1].end == NOW
    assert len(result.requests) == 240  # 12 hours of 1-minute windows in runs of 3


def test_a_failed_run_is_rerun_from_the_first_window_without_state():
    done = {at(m) for m in range(0, 4)} | {at(m) for m in range(9, 12)}
    failed = FailedRun("run-b", at(6), at(9))
    requests, given_up = plan_retries([failed], done, T0, CONFIG)
    # Windows 4 and 5 were lost by an earlier run: the re-run starts there.
    assert [(r.start, r.end, r.reason, r.attempt, r.repairs) for r in requests] == [
        (at(4), at(7), "retry", 1, "run-b"), (at(7), at(9), "retry", 1, "run-b"),
    ]
    assert requests[0].run_key == "retry:2026-01-05T00:04:00.000Z:2026-01-05T00:07:00.000Z:run-b"
    assert given_up == []


def test_windows_already_materialized_by_a_later_run_are_not_rerun():
    done = {at(m) for m in range(0, 8)}
    requests, _ = plan_retries([FailedRun("r", at(6), at(9), attempt=1)], done, T0, CONFIG)
    assert [(r.start, r.end, r.attempt) for r in requests] == [(at(8), at(9), 2)]
    assert plan_retries([FailedRun("r", at(6), at(9))], {at(m) for m in range(9)}, T0, CONFIG) == ([], [])


def test_a_run_failing_every_retry_is_given_up_and_reported():
    failure = FailedRun("r", at(0), at(3), attempt=RUN_RETRIES)
    assert plan_retries([failure], set(), T0, CONFIG) == ([], [failure])


def test_a_rerun_never_starts_before_the_first_window_handed_out():
    requests, _ = plan_retries([FailedRun("r", at(2), at(3))], set(), at(1), CONFIG)
    assert [(r.start, r.end) for r in requests] == [(at(1), at(3))]
