"""The embedded ClickHouse store as the ingest spine uses it: de-duplication, windows, the lock."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from filelock import FileLock, Timeout

from qraft_core.lander import land_batch
from qraft_core.store import ClickHouseStore, open_store
from qraft_core.store.base import Filter, StoreError, StoreUnavailable
from qraft_core.store.clickhouse import STEP_KEEP_OPEN_S
from qraft_core.store.sessions import ENGINE, WaitSignal

T0 = datetime(2026, 1, 5, tzinfo=UTC)
MS = pl.Datetime("ms", "UTC")


def raw_rows(
    ids: list[str],
    *,
    source: str = "s",
    seconds: list[int] | None = None,
    landed_at: datetime = T0,
    payload: str = "{}",
) -> pl.DataFrame:
    times = [T0 + timedelta(seconds=s) for s in (seconds or range(len(ids)))]
    return pl.DataFrame(
        {
            "event_id": ids,
            "source": [source] * len(ids),
            "type": ["trade"] * len(ids),
            "timestamp": times,
            "ingest_time": times,
            "landed_at": [landed_at] * len(ids),
            "payload": [payload] * len(ids),
            "parser_version": ["v1"] * len(ids),
            "raw_checksum": [""] * len(ids),
        },
        schema_overrides={"timestamp": MS, "ingest_time": MS, "landed_at": MS},
    )


def test_migrations_are_applied_once(chdb_store):
    assert chdb_store.migrate() == []
    again = open_store(chdb_store.dsn)
    assert again.migrate() == []


def test_raw_events_are_deduplicated_on_event_id_and_the_latest_landing_wins(chdb_store):
    chdb_store.insert("raw_events", raw_rows(["a", "b"], payload='{"v":1}'))
    chdb_store.insert(
        "raw_events",
        raw_rows(["a", "b", "c"], landed_at=T0 + timedelta(minutes=1), payload='{"v":2}'),
    )
    assert chdb_store.count("raw_events") == {"": 3}
    rows = chdb_store.select(
        "raw_events", order_by=("event_id",), columns=("event_id", "payload", "landed_at")
    )
    assert rows.rows() == [
        ("a", '{"v":2}', T0 + timedelta(minutes=1)),
        ("b", '{"v":2}', T0 + timedelta(minutes=1)),
        ("c", '{"v":2}', T0 + timedelta(minutes=1)),
    ]


def test_a_landed_batch_round_trips_through_raw_events_and_dead_letters(chdb_store):
    line = (
        b'{"event_id":"e1","source":"s","type":"t","timestamp":"2026-01-05T00:00:01.5Z",'
        b'"ingest_time":"2026-01-05T00:00:02Z","payload":{"p":1},"meta":{"parser_version":"v1"}}'
    )
    batch = land_batch([("qraft.raw.s", line + b"\n{oops\n" + line)], now=T0)
    with chdb_store.session():
        chdb_store.insert("raw_events", batch.raw_events)
        chdb_store.insert("dead_letters", batch.dead_letters)
        chdb_store.insert("dead_letters", batch.dead_letters)  # a redelivery
    stored = chdb_store.select("raw_events")
    assert stored.drop("landed_at").row(0, named=True) == {
        "event_id": "e1",
        "source": "s",
        "type": "t",
        "timestamp": T0 + timedelta(seconds=1.5),
        "ingest_time": T0 + timedelta(seconds=2),
        "payload": '{"p":1}',
        "parser_version": "v1",
        "raw_checksum": "",
    }
    letters = chdb_store.select("dead_letters")
    assert letters.height == 1
    assert (
        letters.row(0, named=True)["reason"]
        == "malformed JSON: Expecting property name enclosed in double quotes"
    )
    assert letters.row(0, named=True)["window_start"] is None


def test_windows_filters_and_groups(chdb_store):
    chdb_store.insert("raw_events", raw_rows(["a", "b", "c"], seconds=[0, 59, 60]))
    chdb_store.insert("raw_events", raw_rows(["n"], source="news", seconds=[30]))
    first_minute = chdb_store.select(
        "raw_events", start=T0, end=T0 + timedelta(minutes=1), order_by=("timestamp",)
    )
    assert first_minute["event_id"].to_list() == ["a", "n", "b"]
    assert chdb_store.count("raw_events", group_by="source") == {"s": 3, "news": 1}
    assert chdb_store.count("raw_events", where=[Filter("event_id", "in", ["a", "c", "zz"])]) == {
        "": 2
    }
    assert chdb_store.count("raw_events", where=[Filter("event_id", "in", [])]) == {"": 0}
    assert chdb_store.max_time("raw_events", "source") == {
        "s": T0 + timedelta(seconds=60),
        "news": T0 + timedelta(seconds=30),
    }
    assert chdb_store.extent("raw_events", "timestamp", [Filter("source", "=", "s")]) == (
        T0,
        T0 + timedelta(seconds=60),
    )
    assert chdb_store.extent("raw_events", "timestamp", [Filter("source", "=", "none")]) is None
    newest = chdb_store.select("raw_events", order_by=("timestamp",), descending=True, limit=1)
    assert newest["event_id"].to_list() == ["c"]


def test_replace_window_replaces_only_that_window(chdb_store):
    chdb_store.insert("raw_events", raw_rows(["a", "b", "c"], seconds=[0, 30, 60]))
    chdb_store.replace_window(
        "raw_events", T0, T0 + timedelta(minutes=1), raw_rows(["x"], seconds=[10])
    )
    assert chdb_store.select("raw_events", order_by=("timestamp",))["event_id"].to_list() == [
        "x",
        "c",
    ]


def test_rows_lacking_a_column_are_refused_before_anything_is_written(chdb_store):
    with pytest.raises(StoreError, match="^rows for raw_events lack columns: landed_at$"):
        chdb_store.insert("raw_events", raw_rows(["a"]).drop("landed_at"))
    assert chdb_store.count("raw_events") == {"": 0}


def test_unknown_tables_and_bad_identifiers_are_refused(chdb_store):
    with pytest.raises(ValueError, match="^unknown table 'nope'"):
        chdb_store.count("nope")
    with pytest.raises(
        (ValueError, StoreError), match="not a valid identifier: 'source; DROP TABLE raw_events'"
    ):
        chdb_store.count("raw_events", group_by="source; DROP TABLE raw_events")
    with pytest.raises(ValueError, match="not a valid identifier: 'x y'"):
        chdb_store.select("raw_events", columns=("x y",))
    assert chdb_store.count("raw_events") == {"": 0}


def test_a_store_held_by_someone_else_is_unavailable_after_the_lock_timeout(chdb_store):
    chdb_store.lock_timeout_s = 0.2
    holder = FileLock(chdb_store.lock_path)
    with holder, pytest.raises(StoreUnavailable) as caught:
        chdb_store.count("raw_events")
    assert str(caught.value) == (
        f"the embedded store at {chdb_store.dsn} is held by another process "
        f"(lock {chdb_store.lock_path}) for more than 0s"
    )
    assert chdb_store.count("raw_events") == {"": 0}


def test_a_waiting_store_call_proceeds_once_the_lock_is_released(chdb_store):
    holder = FileLock(chdb_store.lock_path, thread_local=False)  # released by the timer's thread
    holder.acquire()
    release = threading.Timer(0.3, holder.release)
    release.start()
    try:
        chdb_store.insert("raw_events", raw_rows(["a"]))
    finally:
        release.join()
    assert chdb_store.count("raw_events") == {"": 1}


def test_nested_sessions_share_one_lock(chdb_store):
    with chdb_store.session(), chdb_store.session():
        chdb_store.insert("raw_events", raw_rows(["a"]))
        assert chdb_store.count("raw_events") == {"": 1}
    # Released: someone else can take the lock now.
    with FileLock(chdb_store.lock_path, timeout=0.1):
        pass


def test_a_server_dsn_is_not_locked():
    store = ClickHouseStore("http://127.0.0.1:1")
    assert (store.embedded, store.lock_path) == (False, None)
    with pytest.raises(StoreUnavailable, match="^cannot open the store at http://127.0.0.1:1"):
        store.count("raw_events")


# -- threads and processes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_open_s", [0.0, 30.0])
def test_threads_share_the_store_without_losing_a_write(chdb_store, keep_open_s):
    chdb_store.keep_open_s = keep_open_s
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(10):
                chdb_store.insert("raw_events", raw_rows([f"w{worker}-{i}"]))
                with chdb_store.session():
                    assert chdb_store.count(
                        "raw_events", where=[Filter("event_id", "=", f"w{worker}-{i}")]
                    ) == {"": 1}
                chdb_store.select("raw_events", limit=5)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert chdb_store.count("raw_events") == {"": 160}
    ENGINE.close()


def test_a_store_kept_open_is_held_between_sessions_and_closed_when_idle(chdb_store):
    chdb_store.keep_open_s = 600
    chdb_store.count("raw_events")
    assert ENGINE.is_open
    with pytest.raises(Timeout):
        FileLock(chdb_store.lock_path).acquire(timeout=0.05)
    chdb_store.keep_open_s = 0.2
    chdb_store.count("raw_events")
    for _ in range(200):  # the idle engine is closed by its own thread
        if not ENGINE.is_open:
            break
        threading.Event().wait(0.05)
    assert not ENGINE.is_open
    with FileLock(chdb_store.lock_path, timeout=0.1):
        pass


WRITER = """
import sys
from datetime import UTC, datetime
import polars as pl
from qraft_core.store import ClickHouseStore
store = ClickHouseStore(sys.argv[1], lock_timeout_s=20)
now = datetime(2026, 1, 5, tzinfo=UTC)
store.insert("audit_log", pl.DataFrame({"ts": [now], "actor": ["other"], "action": ["x"], "target": ["t"],
    "before": [""], "after": [""], "detail": [""]}))
"""


def test_a_store_kept_open_is_handed_to_another_process_that_asks(chdb_store):
    chdb_store.keep_open_s = 600  # far longer than the other process is willing to wait
    chdb_store.insert("raw_events", raw_rows(["mine"]))
    assert ENGINE.is_open
    other = subprocess.run(
        [sys.executable, "-c", WRITER, chdb_store.dsn], capture_output=True, text=True
    )
    assert other.returncode == 0, other.stderr
    assert chdb_store.count("audit_log") == {"": 1} and chdb_store.count("raw_events") == {"": 1}
    ENGINE.close()
    assert not ENGINE.is_open


def test_a_pipeline_store_stays_open_between_steps_and_yields_to_another_process(chdb_store):
    assert chdb_store.keep_open_between_steps() is chdb_store
    assert chdb_store.keep_open_s == STEP_KEEP_OPEN_S
    chdb_store.keep_open_s = 600
    assert chdb_store.keep_open_between_steps().keep_open_s == 600  # a longer setting is kept
    chdb_store.keep_open_s = 0.0
    chdb_store.keep_open_between_steps()
    chdb_store.insert("raw_events", raw_rows(["step 1"]))
    assert ENGINE.is_open  # the next step finds it open
    other = subprocess.run([sys.executable, "-c", WRITER, chdb_store.dsn], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert chdb_store.count("audit_log") == {"": 1}
    ENGINE.close()


def test_has_source_matches_a_source_and_its_streams(chdb_store, memory_store):
    from qraft_core.plugins.markets.examples import example_patterns, pattern_rows

    streams = [
        ["binance_spot:BTCUSDT"],
        ["binance_spot.price", "news"],
        ["binance_spot_eu:X"],
        ["news"],
    ]
    patterns = [
        p.model_copy(update={"source_streams": s})
        for p, s in zip(example_patterns(), streams, strict=True)
    ]
    for store in (chdb_store, memory_store):
        store.insert("pattern_events", pattern_rows(patterns))
        found = store.select(
            "pattern_events", where=[Filter("source_streams", "has_source", "binance_spot")]
        )
        assert sorted(found["source_streams"].to_list()) == [
            ["binance_spot.price", "news"],
            ["binance_spot:BTCUSDT"],
        ]
        assert store.count(
            "pattern_events", where=[Filter("source_streams", "has_source", "news")]
        ) == {"": 2}
        assert store.count(
            "pattern_events", where=[Filter("source_streams", "has_source", "binance")]
        ) == {"": 0}


def test_table_versions_change_with_every_write(chdb_store):
    first = chdb_store.table_versions(["raw_events", "audit_log"])
    assert first == {"raw_events": "empty", "audit_log": "empty"}
    chdb_store.insert("raw_events", raw_rows(["a", "b"]))
    second = chdb_store.table_versions(["raw_events", "audit_log"])
    assert second["raw_events"] != "empty" and second["audit_log"] == "empty"
    chdb_store.delete("raw_events", [Filter("event_id", "=", "a")])
    assert chdb_store.table_versions(["raw_events"])["raw_events"] != second["raw_events"]


def test_a_store_is_migrated_once_per_process(tmp_path, monkeypatch):
    calls: list[str] = []
    real_migrate = ClickHouseStore.migrate

    def counted(self):
        calls.append(self.dsn)
        return real_migrate(self)

    monkeypatch.setattr(ClickHouseStore, "migrate", counted)
    dsn = f"chdb://{tmp_path / 'once'}"
    first, second = open_store(dsn), open_store(dsn)
    assert calls == [dsn] and first is not second
    assert second.count("raw_events") == {"": 0}  # the second handle sees the migrated schema


def test_threads_waiting_for_a_held_store_each_give_up_after_their_own_timeout(chdb_store):
    chdb_store.lock_timeout_s = 0.3
    holder = FileLock(chdb_store.lock_path, thread_local=False)
    holder.acquire()
    release = threading.Timer(3.0, holder.release)  # longer than 16 waits of 0.3 s one after another
    release.start()
    outcomes: list[str] = []

    def ask() -> None:
        try:
            chdb_store.count("raw_events")
            outcomes.append("served")
        except StoreUnavailable:
            outcomes.append("unavailable")

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    release.join()
    assert outcomes == ["unavailable"] * 16
    assert chdb_store.count("raw_events") == {"": 0}


def test_an_idle_store_still_yields_after_a_failed_check_for_waiters(chdb_store, monkeypatch):
    # Out of file descriptors, the check for a waiting process fails; before, the idle engine's
    # reaper thread died of it and the store was never handed over again.
    chdb_store.keep_open_s = 600
    chdb_store.count("raw_events")
    assert ENGINE.is_open
    check = WaitSignal.someone_waits
    failures = iter([OSError(errno.EMFILE, "Too many open files")])

    def failing_once(signal: WaitSignal) -> bool:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return check(signal)

    monkeypatch.setattr(WaitSignal, "someone_waits", failing_once)
    with WaitSignal(chdb_store.lock_path + ".waiting").waiting():
        for _ in range(200):
            if not ENGINE.is_open:
                break
            threading.Event().wait(0.05)
        assert not ENGINE.is_open
    assert next(failures, None) is None  # the failure was met
