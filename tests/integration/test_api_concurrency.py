"""The real app over real HTTP (uvicorn, its thread pool) on a real embedded store, under parallel load."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from qraft_core.annotations import add_annotation
from qraft_core.api import create_app
from qraft_core.api.server import SERVER_SETTINGS, RequestDeadline
from qraft_core.config import ApiConfig, QraftConfig
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows
from tests.integration import test_api
from tests.integration.test_api import KEY, RuntimeStub

# The same seeded store and runtime as the other API tests.
runtime = test_api.runtime
PATTERNS = example_patterns()
DRIFT = PATTERNS[0]
DAY = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(runtime: RuntimeStub, **settings: Any) -> Iterator[int]:
    """The app served by uvicorn on a free port (yielded) in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning", **settings)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server did not start")
        threading.Event().wait(0.02)
    yield port
    server.should_exit = True
    thread.join()


@pytest.fixture
def base_url(runtime: RuntimeStub) -> Iterator[str]:
    with serving(runtime) as port:
        yield f"http://127.0.0.1:{port}"


def test_200_parallel_writes_mixed_with_reads(base_url: str, runtime: RuntimeStub) -> None:
    reads = [
        ("/patterns", DAY),
        ("/patterns", {**DAY, "source": "binance_spot"}),
        (f"/explain/{DRIFT.pattern_id}", {}),
        (f"/pattern/{PATTERNS[2].pattern_id}", {}),
        ("/annotations/stats", {}),
    ]

    def call(i: int) -> tuple[str, int, str]:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            if i % 2 == 0:
                pattern = PATTERNS[(i // 2) % len(PATTERNS)]
                response = client.post(
                    f"/pattern/{pattern.pattern_id}/annotations",
                    json={"label": "note", "note": f"n-{i // 2}"},
                    headers={"X-API-Key": KEY},
                )
                return "write", response.status_code, response.text
            path, params = reads[(i // 2) % len(reads)]
            response = client.get(path, params=params)
            return "read", response.status_code, response.text

    with ThreadPoolExecutor(max_workers=48) as pool:
        results = list(pool.map(call, range(400)))

    statuses = Counter((kind, status) for kind, status, _ in results)
    assert statuses == {("write", 201): 200, ("read", 200): 200}, [
        r for r in results if r[1] >= 300
    ][:3]
    # Each write stored once and audited once.
    notes = runtime.store.select("annotations", columns=["note", "pattern_id", "annotation_id"])
    assert sorted(notes["note"].to_list()) == sorted(f"n-{n}" for n in range(200))
    audit = runtime.store.select("audit_log", where=[], columns=["action", "after"])
    audited = [
        json.loads(after)["annotation_id"] for action, after in audit.rows() if action == "annotate"
    ]
    assert sorted(audited) == sorted(notes["annotation_id"].to_list())
    # Healthy afterwards, and every write readable at once.
    with httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.get("/patterns", params=DAY).json()["count"] == 4
        detail = client.get(f"/pattern/{DRIFT.pattern_id}").json()
        assert len(detail["annotations"]) == 50
        stats = client.get("/annotations/stats").json()["detectors"]
        assert stats["river.ADWIN"]["notes"] == 50


def test_source_filter_takes_a_source_or_one_of_its_streams(
    base_url: str, runtime: RuntimeStub
) -> None:
    streams = [
        p.model_copy(update={"pattern_id": f"s-{n}", "source_streams": [s]})
        for n, (p, s) in enumerate(
            zip(
                PATTERNS,
                ["binance_spot:BTCUSDT", "binance_spot:ETHUSDT", "binance_spot_eu:BTCUSDT", "news"],
                strict=True,
            )
        )
    ]
    runtime.store.insert("pattern_events", pattern_rows(streams))
    with httpx.Client(base_url=base_url) as client:

        def found(source: str) -> list[str]:
            items = client.get("/patterns", params={**DAY, "source": source}).json()["items"]
            return sorted(
                item["pattern_id"] for item in items if item["pattern_id"].startswith("s-")
            )

        assert found("binance_spot") == ["s-0", "s-1"]
        assert found("binance_spot:ETHUSDT") == ["s-1"]
        assert found("binance_spot_eu") == ["s-2"]
        assert found("binance") == []


def test_cards_are_cached_until_an_annotation_changes_them(runtime: RuntimeStub) -> None:
    # Versions read once an hour: only this API's own writes can refresh a cached card.
    runtime.config = QraftConfig(api=ApiConfig(cache_check_s=3600))
    from fastapi.testclient import TestClient

    client = TestClient(create_app(runtime))
    path = f"/explain/{DRIFT.pattern_id}"
    assert client.get(path).json()["annotations"] == []
    # Written behind the API's back (as another process would): the cached card is served.
    add_annotation(runtime.store, DRIFT.pattern_id, "note", "from elsewhere", actor="cli")
    assert client.get(path).json()["annotations"] == []
    # Written through the API: the card is rebuilt and shows both.
    posted = client.post(
        path.replace("/explain/", "/pattern/") + "/annotations",
        json={"label": "confirmed"},
        headers={"X-API-Key": KEY},
    )
    assert posted.status_code == 201
    assert [a["label"] for a in client.get(path).json()["annotations"]] == ["note", "confirmed"]


def test_other_processes_writes_show_up_when_versions_are_read_every_time(
    runtime: RuntimeStub,
) -> None:
    runtime.config = QraftConfig(api=ApiConfig(cache_check_s=0))
    from fastapi.testclient import TestClient

    client = TestClient(create_app(runtime))
    path = f"/explain/{DRIFT.pattern_id}"
    assert client.get(path).json()["annotations"] == []
    add_annotation(runtime.store, DRIFT.pattern_id, "false_alarm", actor="cli")
    assert [a["label"] for a in client.get(path).json()["annotations"]] == ["false_alarm"]


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"GET /patterns HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"POST /replay HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # body never finished
    ],
)
def test_a_connection_that_never_sends_a_whole_request_is_closed(
    runtime: RuntimeStub, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    # Before, such connections stayed open for as long as the client liked: enough of them used up
    # the API's file descriptors and nobody else was answered.
    monkeypatch.setattr(RequestDeadline, "deadline_s", 0.3)
    with (
        serving(runtime, **SERVER_SETTINGS) as port,
        socket.create_connection(("127.0.0.1", port)) as slow,
        socket.create_connection(("127.0.0.1", port)) as prompt,
    ):
        slow.settimeout(20)
        slow.sendall(sent)
        prompt.sendall(b"GET /annotations/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert prompt.recv(100).startswith(b"HTTP/1.1 200 OK")
        assert slow.recv(100) == b""  # closed by the server
