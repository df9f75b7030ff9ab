"""An MLflow outage costs a detections run a bounded wait, once: against a real local socket that
accepts and never answers, and against a refused port, `log_run` gives up, warns once (without the
URI's password) and skips tracking for a while before trying again."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from qraft_core.tracking import Tracker, TrackingPause

PASSWORD = "S3cretPassw0rd"


class SilentServer:
    """A TCP listener that accepts every connection, reads nothing and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qraft_core.tracking" and r.levelno == logging.WARNING]


def test_a_server_that_never_answers_costs_one_bounded_attempt_then_tracking_pauses(
    silent_server: SilentServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The user's own timeout is kept (the default would wait 120 s per attempt).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    clock = Clock()
    pause = TrackingPause(clock=clock)
    tracker = Tracker(f"http://alice:{PASSWORD}@127.0.0.1:{silent_server.port}", pause=pause)
    with caplog.at_level(logging.WARNING, logger="qraft_core.tracking"):
        assert tracker.log_run("window 1", {"a": 1}, {"m": 1.0}) is None
        attempts = len(silent_server.connections)
        # Few retries, not MLflow's seven.
        assert 1 <= attempts <= 2
        assert tracker.log_run("window 2", {"a": 1}, {"m": 1.0}) is None
        # Another tracker of the same server in this process (the next materialization) waits too.
        assert Tracker(tracker.tracking_uri, pause=pause).log_run("window 3", {}, {}) is None
    assert len(silent_server.connections) == attempts
    [warning] = warnings(caplog)
    assert "'window 1'" in warning and "skipped for" in warning
    assert PASSWORD not in warning and "alice:***@" in warning

    caplog.clear()
    clock.now += pause.seconds
    with caplog.at_level(logging.WARNING, logger="qraft_core.tracking"):
        assert tracker.log_run("window 4", {}, {}) is None
    assert len(silent_server.connections) > attempts
    assert len(warnings(caplog)) == 1


def test_a_refused_port_gives_up_without_mlflows_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    # A backoff of 0 keeps this test fast; the number of retries is the tracker's own.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    tracker = Tracker(f"http://alice:{PASSWORD}@127.0.0.1:{refused_port()}", pause=TrackingPause(clock=Clock()))
    with caplog.at_level(logging.WARNING, logger="qraft_core.tracking"):
        assert tracker.log_run("window 1", {}, {}) is None
        assert tracker.log_run("window 2", {}, {}) is None
    [warning] = warnings(caplog)
    assert "Max retries exceeded" in warning or "retries" in warning
    assert PASSWORD not in warning


def test_the_users_retry_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    Tracker(f"http://127.0.0.1:{refused_port()}", pause=TrackingPause(clock=Clock())).log_run("x", {}, {})
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
