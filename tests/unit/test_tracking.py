"""The tracker bounds only its own MLflow calls, and its pause after a failure is one per URI and clock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qraft_core.tracking import Tracker, TrackingPause, default_tracking_uri

LIMITS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTracker(Tracker):
    """A tracker whose MLflow call is `call` (it sees the tracker's environment)."""

    def __init__(self, call: Callable[[], str], pause: TrackingPause | None = None, uri: str = "http://mlflow:5000") -> None:
        super().__init__(uri, pause=pause)
        self.call = call

    def _log_run(self, run_name: str, params: Any, metrics: Any, tags: Any) -> str:
        return self.call()


def failing() -> str:
    raise ConnectionError("MLflow is down")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qraft_core.tracking" and r.levelno == logging.WARNING]


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_mlflows_http_limits_bound_the_trackers_call_and_leave_the_process_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LIMITS:
        monkeypatch.delenv(name, raising=False)
    seen: list[dict[str, str | None]] = []

    def call() -> str:
        seen.append({name: os.environ.get(name) for name in LIMITS})
        return "run-1"

    assert FakeTracker(call, TrackingPause()).log_run("r", {}, {}) == "run-1"
    assert seen == [{"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}]
    assert {name: os.environ.get(name) for name in LIMITS} == dict.fromkeys(LIMITS)
    # A real run against a local store, then a child process: neither inherits the tracker's limits.
    assert Tracker(default_tracking_uri(tmp_path), pause=TrackingPause()).log_run("r", {"a": 1}, {"m": 1.0})
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT'))"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "None"


def test_the_users_own_http_limits_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    seen: list[tuple[str | None, str | None]] = []

    def call() -> str:
        seen.append((os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT"), os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")))
        return "run-1"

    FakeTracker(call, TrackingPause()).log_run("r", {}, {})
    assert seen == [("60", "1")]
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_failure_pauses_only_the_trackers_sharing_its_pause() -> None:
    clock = Clock()
    pause = TrackingPause(seconds=300.0, clock=clock)
    assert FakeTracker(failing, pause).log_run("w1", {}, {}) is None
    runs: list[str] = []

    def working() -> str:
        runs.append("run")
        return "run-1"

    # The next materialization of the same process shares the pause: skipped.
    assert FakeTracker(working, pause).log_run("w2", {}, {}) is None
    # A tracker with its own pause (another test, another composition root) is not silenced.
    assert FakeTracker(working, TrackingPause(clock=Clock(0.0))).log_run("w3", {}, {}) == "run-1"
    clock.now += pause.seconds
    assert FakeTracker(working, pause).log_run("w4", {}, {}) == "run-1"
    assert runs == ["run", "run"]


class ObservedPause(TrackingPause):
    """Counts the callers that asked for a turn (they then wait for it or are skipped)."""

    def __init__(self) -> None:
        super().__init__(clock=Clock())
        self.callers = 0

    @contextmanager
    def turn(self, uri: str) -> Iterator[bool]:
        self.callers += 1
        with super().turn(uri) as open_:
            yield open_


def test_concurrent_failing_calls_make_one_attempt_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    attempts: list[str] = []

    def slow_failure() -> str:
        attempts.append("attempt")
        assert release.wait(10)
        raise ConnectionError("MLflow is down")

    pause = ObservedPause()
    tracker = FakeTracker(slow_failure, pause)
    threads = [threading.Thread(target=tracker.log_run, args=(f"w{i}", {}, {})) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="qraft_core.tracking"):
        threads[0].start()
        wait_until(lambda: len(attempts) == 1)
        for thread in threads[1:]:
            thread.start()
        # Every other caller is waiting while the first attempt is in flight.
        wait_until(lambda: pause.callers == len(threads))
        release.set()
        for thread in threads:
            thread.join(10)
    assert attempts == ["attempt"]
    assert len(warnings(caplog)) == 1


def test_concurrent_calls_to_a_working_mlflow_are_all_recorded() -> None:
    runs: list[str] = []

    def working() -> str:
        runs.append(threading.current_thread().name)
        return "run-1"

    tracker = FakeTracker(working, TrackingPause())
    threads = [threading.Thread(target=tracker.log_run, args=(f"w{i}", {}, {})) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(runs) == 8
