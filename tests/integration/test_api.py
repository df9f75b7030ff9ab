"""The REST and Explain API through the real app against real embedded ClickHouse."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from filelock import FileLock
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import status_code_conformance

from qraft_core.annotations import MAX_NOTE
from qraft_core.api import ReplayConflict, create_app
from qraft_core.api.app import MAX_BODY_BYTES
from qraft_core.config import (
    ApiConfig,
    ConfigError,
    ExplainConfig,
    LlmConfig,
    QraftConfig,
    load_sources,
)
from qraft_core.events import PatternEvent, iso
from qraft_core.explain import load_cards_config, materialize_cards
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns, pattern_rows
from qraft_core.store import ClickHouseStore
from qraft_core.store.sessions import ENGINE

KEY = "test-key-0123456789"
DAY = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}
PATTERNS = example_patterns()
DRIFT, ANOMALY, CLUSTER, FREQ = PATTERNS
INJECTIONS = [
    "' OR '1'='1",
    "x'); DROP TABLE pattern_events; --",
    "{p0:String}",
    "\\",
    "%27%20OR%201=1",
    "../../etc/passwd",
    "模式' --",
]


@dataclass
class RuntimeStub:
    config: QraftConfig
    config_path: Path
    store: ClickHouseStore
    data_dir: Path


class FakeLauncher:
    """Remembers launched replays; a replay overlapping one of them on a shared source conflicts."""

    def __init__(self) -> None:
        self.launched: list[tuple[datetime, datetime, list[str]]] = []

    def launch(self, start: datetime, end: datetime, sources: list[str]) -> dict[str, str]:
        for a, b, running in self.launched:
            if start < b and a < end and set(running) & set(sources):
                raise ReplayConflict(f"replay {iso(a)} to {iso(b)} of {', '.join(running)} is still running")
        self.launched.append((start, end, sources))
        return {"id": f"replay-{len(self.launched)}", "status": "queued"}


class FakeLlmEndpoint:
    """An OpenAI-compatible chat endpoint on loopback that answers, hangs, talks nonsense or fails."""

    def __init__(self) -> None:
        self.behaviour = "answer"
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if endpoint.behaviour == "hang":
                    endpoint.release.wait(10)
                status, payload = {
                    "answer": (200, json.dumps({"choices": [{"message": {"content": "Volatility rose."}}]})),
                    "hang": (200, "{}"),
                    "garbage": (200, "<html>upstream says hi</html>"),
                    "error": (500, json.dumps({"error": "overloaded"})),
                }[endpoint.behaviour]
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def runtime(
    chdb_store: ClickHouseStore, config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RuntimeStub]:
    monkeypatch.setenv("QRAFT_API_KEY", KEY)
    # As `qraft api` runs it: the embedded store stays open between requests.
    chdb_store.keep_open_s = QraftConfig().api.store_keep_open_s
    with chdb_store.session():
        chdb_store.insert("clean_events", example_clean_events())
        chdb_store.insert("pattern_events", pattern_rows(PATTERNS))
    yield RuntimeStub(QraftConfig(data_dir=tmp_path / "data"), config_dir, chdb_store, tmp_path / "data")
    ENGINE.close()


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def client(runtime: RuntimeStub, launcher: FakeLauncher) -> TestClient:
    return TestClient(create_app(runtime, launcher))


@pytest.fixture
def llm_endpoint() -> Iterator[FakeLlmEndpoint]:
    endpoint = FakeLlmEndpoint()
    yield endpoint
    endpoint.stop()


def write(client: TestClient, path: str, body: dict[str, Any], key: str | None = KEY) -> Any:
    return client.post(path, json=body, headers={"X-API-Key": key} if key is not None else {})


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["pattern_id"] for item in items]


# -- reads ------------------------------------------------------------------------------------------------


def test_patterns_filtered_by_type_source_and_confidence(client: TestClient) -> None:
    everything = client.get("/patterns", params=DAY).json()
    assert ids(everything["items"]) == [p.pattern_id for p in PATTERNS]
    assert everything["next_cursor"] is None and everything["count"] == 4
    assert PatternEvent.model_validate(everything["items"][0]) == DRIFT
    assert ids(client.get("/patterns", params={**DAY, "type": "anomaly"}).json()["items"]) == [
        ANOMALY.pattern_id
    ]
    news = client.get("/patterns", params={**DAY, "source": "news"}).json()["items"]
    assert ids(news) == [CLUSTER.pattern_id, FREQ.pattern_id]
    sure = client.get("/patterns", params={**DAY, "min_confidence": 0.8}).json()["items"]
    assert ids(sure) == [DRIFT.pattern_id, ANOMALY.pattern_id]
    # Without a range: the allowed span ending at the newest pattern.
    default = client.get("/patterns").json()
    assert default["end"] == "2026-01-05T10:58:00.001Z" and default["count"] == 4


def test_an_offset_whose_plus_was_not_url_encoded_still_reads(client: TestClient) -> None:
    # curl "…?start=2026-01-05T02:00:00+02:00" sends a literal '+', which a query string decodes to a space.
    page = client.get("/patterns?start=2026-01-05T02:00:00+02:00&end=2026-01-06T02:00:00+02:00").json()
    assert (page["start"], page["end"], page["count"]) == ("2026-01-05T00:00:00.000Z", "2026-01-06T00:00:00.000Z", 4)


def test_pages_are_stable_while_patterns_arrive(client: TestClient, runtime: RuntimeStub) -> None:
    # Three more findings in the drift's window: ties on window_start are ordered by pattern_id.
    twins = [DRIFT.model_copy(update={"pattern_id": f"{DRIFT.pattern_id[:-1]}{suffix}"}) for suffix in "01a"]
    runtime.store.insert("pattern_events", pattern_rows(twins))
    expected = sorted([DRIFT, *twins], key=lambda p: p.pattern_id) + [ANOMALY, CLUSTER, FREQ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {**DAY, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/patterns", params=params).json()
        seen += ids(page["items"])
        pages += 1
        if pages == 1:
            # A late finding before the cursor must not shift later pages.
            early = ANOMALY.model_copy(update={"pattern_id": "0-late", "window_start": DRIFT.window_start})
            runtime.store.insert("pattern_events", pattern_rows([early]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [p.pattern_id for p in expected]
    assert pages == 4


def test_pattern_detail_has_context_card_and_annotations(client: TestClient) -> None:
    write(client, f"/pattern/{DRIFT.pattern_id}/annotations", {"label": "confirmed", "note": "real move"})
    detail = client.get(f"/pattern/{DRIFT.pattern_id}").json()
    assert detail["pattern"]["pattern_id"] == DRIFT.pattern_id
    assert detail["context"]["sources"][0]["lines"][0]["values"]["price_min"] == 42035.0
    assert detail["card"]["replay_command"] == (
        "qraft replay --start 2026-01-05T10:27:00Z --end 2026-01-05T10:38:00Z --source binance_spot"
    )
    assert [(a["label"], a["note"]) for a in detail["annotations"]] == [("confirmed", "real move")]
    assert "confirmed by key:" in detail["card"]["markdown"]


def test_context_rows_page_through_the_window(client: TestClient) -> None:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/pattern/{DRIFT.pattern_id}/context", params=params).json()
        rows += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(rows) == 22 and {r["source"] for r in rows} == {"binance_spot"}
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert (
        rows[0]["timestamp"] == "2026-01-05T10:27:00.000Z"
        and json.loads(rows[0]["payload"])["p"] == "42035.00"
    )


@pytest.mark.parametrize("lang, title", [("en", "### Concept drift"), ("zh", "### 概念漂移")])
def test_explain_human_in_both_languages(client: TestClient, lang: str, title: str) -> None:
    card = client.get(f"/explain/{DRIFT.pattern_id}", params={"lang": lang}).json()
    assert card["mode"] == "human" and card["label"] == "rule-based" and card["markdown"].startswith(title)
    text = client.get(f"/explain/{DRIFT.pattern_id}", params={"lang": lang, "format": "markdown"})
    assert text.headers["content-type"].startswith("text/markdown") and text.text == card["markdown"]


def test_sources_lists_configuration_without_secrets(client: TestClient) -> None:
    sources = client.get("/sources").json()["sources"]
    assert [s["name"] for s in sources] == ["binance_spot", "news"]
    assert sources[0]["status"] == "unregistered" and sources[0]["credentials"] == []


def test_export_csv_and_json(client: TestClient) -> None:
    response = client.get("/export/patterns", params={**DAY, "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["pattern_id"] for r in rows] == [p.pattern_id for p in PATTERNS]
    assert rows[0]["algorithms"] == "river.ADWIN@0.22.0;capymoa.ADWIN@0.15.1"
    assert json.loads(rows[0]["metric_changes"]) == {"volatility": 0.37, "volume": 1.25}
    exported = client.get("/export/patterns", params={**DAY, "format": "json", "type": "freq_pattern"}).json()
    assert [PatternEvent.model_validate(p) for p in exported] == [FREQ]
    empty = client.get("/export/patterns", params={"start": "2026-02-01T00:00:00Z", "format": "json"})
    assert empty.json() == []



def test_export_spans_any_range_like_the_cli(client: TestClient, runtime: RuntimeStub) -> None:
    old = DRIFT.model_copy(update={"pattern_id": "old-drift", "timestamp": DRIFT.timestamp - timedelta(days=400),
                                   "window_start": DRIFT.window_start - timedelta(days=400)})
    runtime.store.insert("pattern_events", pattern_rows([old]))
    everything = client.get("/export/patterns", params={"format": "json"}).json()
    assert ids(everything) == ["old-drift"] + [p.pattern_id for p in PATTERNS]
    year = client.get("/export/patterns", params={"format": "json", "start": "2024-06-01T00:00:00Z",
                                                  "end": "2026-01-06T00:00:00Z"})
    assert year.status_code == 200 and ids(year.json()) == ["old-drift"] + [p.pattern_id for p in PATTERNS]
    # Pages keep their api.max_range_days limit.
    assert client.get("/patterns", params={"start": "2025-01-01T00:00:00Z"}).status_code == 200
    assert client.get("/patterns", params={"start": "2025-01-01T00:00:00Z", "end": "2026-01-06T00:00:00Z"}
                      ).status_code == 400


def test_reads_can_require_the_key(runtime: RuntimeStub) -> None:
    runtime.config = QraftConfig(api=ApiConfig(read_requires_key=True))
    locked = TestClient(create_app(runtime))
    assert locked.get("/patterns", params=DAY).status_code == 401
    assert locked.get("/patterns", params=DAY, headers={"X-API-Key": "nope"}).status_code == 403
    assert locked.get("/patterns", params=DAY, headers={"X-API-Key": KEY}).json()["count"] == 4


# -- writes -----------------------------------------------------------------------------------------------


def audit_rows(runtime: RuntimeStub, action: str) -> list[dict[str, Any]]:
    frame = runtime.store.select("audit_log", order_by=("ts",))
    return [row for row in frame.iter_rows(named=True) if row["action"] == action]


def test_annotations_and_detector_stats(client: TestClient, runtime: RuntimeStub) -> None:
    created = write(
        client, f"/pattern/{ANOMALY.pattern_id}/annotations", {"label": "false_alarm", "author": "ana"}
    )
    assert created.status_code == 201 and created.json()["author"] == "ana"
    write(client, f"/pattern/{CLUSTER.pattern_id}/annotations", {"label": "confirmed"})
    listed = client.get(f"/pattern/{ANOMALY.pattern_id}/annotations").json()["annotations"]
    assert [a["label"] for a in listed] == ["false_alarm"]
    stats = client.get("/annotations/stats").json()["detectors"]
    assert stats["river.HalfSpaceTrees"] == {"confirmed": 0, "false_alarm": 1, "notes": 0, "precision": 0.0}
    assert stats["capymoa.CluStream"]["confirmed"] == 1
    audited = audit_rows(runtime, "annotate")
    assert [row["target"] for row in audited] == [ANOMALY.pattern_id, CLUSTER.pattern_id]
    assert audited[0]["actor"].startswith("key:")


def test_precision_is_null_for_a_detector_nobody_judged(client: TestClient) -> None:
    # Before, 0/0 was reported as a precision of 0.0: an unreviewed detector looked useless.
    write(client, f"/pattern/{ANOMALY.pattern_id}/annotations", {"label": "note", "note": "look again"})
    stats = client.get("/annotations/stats").json()["detectors"]
    assert stats["river.HalfSpaceTrees"] == {"confirmed": 0, "false_alarm": 0, "notes": 1, "precision": None}


def test_the_key_is_checked_before_the_body_is_read(client: TestClient) -> None:
    # Before, the body was parsed for keys written twice first: an anonymous client got a 400 about it.
    path = f"/pattern/{DRIFT.pattern_id}/annotations"
    anonymous = client.post(path, content=b'{"label": "note", "label": "note"}',
                            headers={"content-type": "application/json"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "missing API key (send it in the X-API-Key header)"})


def test_bodies_over_the_limit_are_413_on_every_route(client: TestClient, runtime: RuntimeStub) -> None:
    # Before, any body was buffered and parsed whole, with or without the key: a few 1 GB ones ran the API out of memory.
    too_big = json.dumps({"label": "note", "note": "x" * MAX_BODY_BYTES}).encode()
    refused = {"error": f"body: larger than the limit of {MAX_BODY_BYTES} bytes"}
    for path in (f"/pattern/{DRIFT.pattern_id}/annotations", "/replay", "/config/sources", "/patterns"):
        declared = client.post(path, content=too_big, headers={"content-type": "application/json"})
        assert (declared.status_code, declared.json()) == (413, refused)
    streamed = client.post(  # chunked, without a Content-Length: counted as it comes
        "/replay", content=iter([too_big[:40_000], too_big[40_000:]]),
        headers={"content-type": "application/json", "X-API-Key": KEY},
    )
    assert (streamed.status_code, streamed.json()) == (413, refused)
    # The largest legitimate body fits: a note of MAX_NOTE characters, each in JSON escapes.
    longest = json.dumps({"label": "note", "note": "\U0001f600" * MAX_NOTE, "author": "é" * 200}).encode()
    accepted = client.post(f"/pattern/{DRIFT.pattern_id}/annotations", content=longest,
                           headers={"content-type": "application/json", "X-API-Key": KEY})
    assert accepted.status_code == 201 and accepted.json()["note"] == "\U0001f600" * MAX_NOTE
    assert runtime.store.count("annotations") == {"": 1}


def test_head_answers_as_get_without_a_body(client: TestClient) -> None:
    # Before, HEAD was a 405 everywhere but static files: uptime checks saw the API as broken.
    for path in ("/", "/docs", "/patterns", "/explorer/api/pulse", f"/explain/{DRIFT.pattern_id}"):
        head, get = client.head(path), client.get(path)
        assert (head.status_code, head.content) == (get.status_code, b""), path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/no-such-path").status_code == 404


def test_writes_need_the_right_key(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"label": "note", "note": "x"}
    path = f"/pattern/{DRIFT.pattern_id}/annotations"
    missing = write(client, path, body, key=None)
    assert missing.status_code == 401 and missing.json() == {
        "error": "missing API key (send it in the X-API-Key header)"
    }
    assert write(client, path, body, key="wrong").json() == {"error": "wrong API key"}
    assert write(client, path, body, key="wrong").status_code == 403
    monkeypatch.delenv("QRAFT_API_KEY")
    disabled = write(client, path, body)
    assert disabled.status_code == 503 and "set QRAFT_API_KEY" in disabled.json()["error"]


def test_config_sources_adds_validates_and_audits(client: TestClient, runtime: RuntimeStub) -> None:
    path = runtime.config_path / "sources.yaml"
    source = {
        "name": "ticker",
        "type": "file",
        "endpoint": "data/demo/ticker.jsonl",
        "parser": "generic",
        "options": {"time_field": "E"},
        "owner": "markets-team",
    }
    added = write(client, "/config/sources", source)
    assert added.status_code == 200 and added.json()["created"] is True
    assert load_sources(runtime.config_path).get("ticker").options == {"time_field": "E"}
    updated = write(client, "/config/sources", {**source, "description": "24h ticker"})
    assert updated.json()["created"] is False
    assert [s.name for s in load_sources(runtime.config_path).sources] == ["binance_spot", "news", "ticker"]
    before = path.read_text()
    bad = write(client, "/config/sources", {**source, "name": "other", "parser": "no_such_parser"})
    assert bad.status_code == 400 and "parser: unknown parser 'no_such_parser'" in bad.json()["error"]
    unknown_key = write(client, "/config/sources", {**source, "endpont": "typo"})
    assert unknown_key.status_code == 400 and "endpont" in unknown_key.json()["error"]
    assert path.read_text() == before
    audited = audit_rows(runtime, "config.sources")
    assert [json.loads(row["before"] or "null") for row in audited][0] is None
    assert json.loads(audited[1]["after"])["description"] == "24h ticker"
    assert yaml.safe_load(before)["sources"][2]["name"] == "ticker"


def test_config_sources_refuses_keys_written_twice(
    client: TestClient, runtime: RuntimeStub
) -> None:
    path = runtime.config_path / "sources.yaml"
    before = path.read_text()
    json_body = {"content-type": "application/json", "X-API-Key": KEY}
    # Before, the last of the two was written to sources.yaml without a word.
    twice = client.post("/config/sources", headers=json_body, content=b'{"name": "x", "type": "file", '
                        b'"endpoint": "a", "parser": "generic", "name": "y"}')
    nested = client.post("/config/sources", headers=json_body, content=b'{"name": "x", "type": "file", '
                         b'"endpoint": "a", "options": {"time_field": "E", "time_field": "F"}}')
    assert [(a.status_code, a.json()) for a in (twice, nested)] == [
        (400, {"error": "body: the key 'name' is written twice"}),
        (400, {"error": "body: the key 'time_field' is written twice"}),
    ]
    assert path.read_text() == before


def test_config_sources_errors_name_the_file_and_the_source(client: TestClient, runtime: RuntimeStub) -> None:
    path = runtime.config_path / "sources.yaml"
    before = path.read_text()
    # Before, the error named a deleted temporary copy of the file and the entry's index in it.
    bogus = write(client, "/config/sources", {"name": "ok_name", "type": "bogus", "endpoint": "a"})
    assert bogus.status_code == 400
    assert bogus.json()["error"].startswith(f"{path}: sources['ok_name'].type: unknown source type 'bogus'")
    assert path.read_text() == before


def test_replay_calls_the_launcher_and_reports_conflicts(
    client: TestClient, launcher: FakeLauncher, runtime: RuntimeStub
) -> None:
    body = {"start": "2026-01-05T10:00:00Z", "end": "2026-01-05T11:00:00Z", "sources": ["news"]}
    accepted = write(client, "/replay", body)
    assert accepted.status_code == 202
    assert accepted.json() == {
        "id": "replay-1",
        "status": "queued",
        "start": "2026-01-05T10:00:00.000Z",
        "end": "2026-01-05T11:00:00.000Z",
        "sources": ["news"],
    }
    assert launcher.launched[0][2] == ["news"]
    conflict = write(client, "/replay", {**body, "start": "2026-01-05T10:30:00Z", "sources": []})
    assert conflict.status_code == 409 and "still running" in conflict.json()["error"]
    unknown = write(client, "/replay", {**body, "sources": ["nasdaq"]})
    assert unknown.status_code == 400 and "unknown source(s) 'nasdaq'" in unknown.json()["error"]
    assert [row["target"] for row in audit_rows(runtime, "replay")] == ["news"]
    # Before, a misspelt field was ignored (every enabled source replayed) and the last of two keys kept.
    typo = write(client, "/replay", {**body, "source": ["news"]})
    twice = client.post("/replay", content=b'{"start": "2026-01-05T12:00:00Z", "start": "2026-01-05T13:00:00Z", '
                        b'"end": "2026-01-05T14:00:00Z"}', headers={"content-type": "application/json", "X-API-Key": KEY})
    assert [(a.status_code, a.json()) for a in (typo, twice)] == [
        (400, {"error": "body.source: an unknown field (check the spelling)"}),
        (400, {"error": "body: the key 'start' is written twice"}),
    ]
    assert len(launcher.launched) == 1
    no_runner = TestClient(create_app(runtime))
    unavailable = write(no_runner, "/replay", body)
    assert unavailable.status_code == 503 and "without a replay runner" in unavailable.json()["error"]


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("/patterns", {"start": "yesterday"}, "start: 'yesterday' is not an ISO 8601 time"),
        ("/patterns", {"start": "2026-01-05T00:00:00Z", "end": "2026-13-01"}, "end: '2026-13-01'"),
        (
            "/patterns",
            {"start": "2026-01-05T10:00:00Z", "end": "2026-01-05T09:00:00Z"},
            "must be after start",
        ),
        ("/patterns", {"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "limit of 31 days"),
        ("/patterns", {**DAY, "type": "drift"}, "type: 'drift' is not a pattern type"),
        ("/patterns", {**DAY, "limit": 5000}, "limit"),
        ("/patterns", {**DAY, "min_confidence": 2}, "min_confidence"),
        ("/patterns", {**DAY, "cursor": "bm9wZQ"}, "cursor: not a cursor this API issued"),
        ("/export/patterns", {**DAY, "format": "xml"}, "format"),
        (f"/explain/{DRIFT.pattern_id}", {"mode": "poetry"}, "mode"),
        (f"/explain/{DRIFT.pattern_id}", {"lang": "fr"}, "lang"),
        ("/patterns", {**DAY, "source": "a\x00b"}, "source: control characters are not allowed"),
    ],
)
def test_bad_parameters_are_400_with_a_message(
    client: TestClient, path: str, params: dict[str, Any], message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_unknown_paths_wrong_methods_and_unreadable_bodies_answer_in_the_error_shape(client: TestClient) -> None:
    annotations = f"/pattern/{DRIFT.pattern_id}/annotations"
    json_body = {"content-type": "application/json", "X-API-Key": KEY}
    answers = [
        client.get("/pattern/../../etc/passwd"),
        client.get("/explorer/static/../../../etc/passwd"),
        client.delete("/patterns"),
        client.post(annotations, content=b"{label: note}", headers=json_body),
        client.post(annotations, content=b'{"label": "\xff"}', headers=json_body),
        # Before, the last of the two verdicts was stored without a word.
        client.post(annotations, content=b'{"label": "confirmed", "label": "false_alarm"}', headers=json_body),
        # Valid JSON of the wrong media type: before, "Input should be a valid dictionary".
        client.post(annotations, content=b'{"label": "note"}', headers={**json_body, "content-type": "text/plain"}),
        client.post(annotations, content=b'{"label": "note"}', headers={"X-API-Key": KEY}),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [
        (404, {"error": "Not Found"}),
        (404, {"error": "Not Found"}),
        (405, {"error": "Method Not Allowed"}),
        (400, {"error": "body: not valid JSON at character 1 (Expecting property name enclosed in double quotes)"}),
        (400, {"error": "body: not valid UTF-8 (byte 11 is 0xff)"}),
        (400, {"error": "body: the key 'label' is written twice"}),
        (400, {"error": "body: must be JSON sent with Content-Type: application/json (got 'text/plain')"}),
        (400, {"error": "body: must be JSON sent with Content-Type: application/json (got no Content-Type)"}),
    ]
    assert answers[2].headers["allow"] == "GET"


@pytest.mark.parametrize(
    "path", ["/pattern/{}", "/explain/{}", "/pattern/{}/context", "/pattern/{}/annotations"]
)
def test_unknown_pattern_is_404(client: TestClient, path: str) -> None:
    response = client.get(path.format("no-such-pattern"))
    assert response.status_code == 404 and response.json() == {
        "error": "no pattern with id 'no-such-pattern'"
    }
    assert write(client, "/pattern/no-such-pattern/annotations", {"label": "note"}).status_code == 404


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_strings_in_every_string_parameter_change_nothing(
    client: TestClient, runtime: RuntimeStub, evil: str
) -> None:
    statuses = [
        client.get(f"/pattern/{evil}").status_code,
        client.get(f"/explain/{evil}", params={"mode": evil}).status_code,
        client.get(f"/explain/{DRIFT.pattern_id}", params={"lang": evil, "format": evil}).status_code,
        client.get(f"/pattern/{evil}/context", params={"cursor": evil}).status_code,
        client.get(f"/pattern/{DRIFT.pattern_id}/context", params={"cursor": evil}).status_code,
        client.get("/patterns", params={"start": evil}).status_code,
        client.get("/patterns", params={"end": evil}).status_code,
        client.get("/patterns", params={**DAY, "type": evil}).status_code,
        client.get("/patterns", params={**DAY, "cursor": evil}).status_code,
        client.get("/export/patterns", params={**DAY, "format": evil}).status_code,
        write(client, f"/pattern/{evil}/annotations", {"label": "note"}).status_code,
        write(client, "/replay", {"start": evil, "end": DAY["end"]}).status_code,
        write(client, "/replay", {**DAY, "sources": [evil]}).status_code,
        write(client, "/config/sources", {"name": evil, "type": "file"}).status_code,
        write(client, "/config/sources", {"name": "x", "type": evil}).status_code,
    ]
    assert set(statuses) <= {400, 404}, statuses
    # Strings that are only data are stored as data, verbatim.
    assert client.get("/patterns", params={**DAY, "source": evil}).json()["count"] == 0
    note = write(
        client, f"/pattern/{DRIFT.pattern_id}/annotations", {"label": "note", "note": evil, "author": evil}
    )
    assert note.status_code == 201 and note.json()["note"] == evil
    assert runtime.store.count("pattern_events") == {"": 4}
    assert runtime.store.count("clean_events") == {"": 128}


def test_a_store_held_elsewhere_is_503(client: TestClient, runtime: RuntimeStub) -> None:
    runtime.store.lock_timeout_s = 0.2
    ENGINE.close()
    assert runtime.store.lock_path is not None
    with FileLock(runtime.store.lock_path):
        responses = [client.get(path, params=DAY if path == "/patterns" else {}) for path in (
            "/patterns", f"/pattern/{DRIFT.pattern_id}/context", f"/pattern/{DRIFT.pattern_id}/annotations",
            "/annotations/stats")]
        responses.append(write(client, f"/pattern/{DRIFT.pattern_id}/annotations", {"label": "note"}))
    assert [r.status_code for r in responses] == [503] * 5
    assert all("the store is unavailable" in r.json()["error"] for r in responses)


@pytest.mark.parametrize(("body", "message"), [
    ({"label": "note", "notes": "a typo"}, "body.notes: an unknown field (check the spelling)"),
    ({"label": "note", "note": "a\x00b"}, "note: control characters other than line breaks and tabs are not allowed"),
    ({"label": "confirmed", "author": "ana\n- **Confidence** 0.01"},
     "author: control characters are not allowed (one line of text)"),
])
def test_annotations_that_would_be_lost_or_forge_card_lines_are_400(
    client: TestClient, runtime: RuntimeStub, body: dict[str, Any], message: str
) -> None:
    response = write(client, f"/pattern/{DRIFT.pattern_id}/annotations", body)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert runtime.store.count("annotations") == {"": 0}
    lines = write(client, f"/pattern/{DRIFT.pattern_id}/annotations", {"label": "note", "note": "one\ntwo"})
    assert lines.status_code == 201 and lines.json()["note"] == "one\ntwo"


# -- LLM mode ---------------------------------------------------------------------------------------------


def llm_runtime(
    runtime: RuntimeStub, endpoint: FakeLlmEndpoint, monkeypatch: pytest.MonkeyPatch
) -> RuntimeStub:
    monkeypatch.setenv("QRAFT_LLM_API_KEY", "llm-secret")
    runtime.config = QraftConfig(
        llm=LlmConfig(enabled=True, url=endpoint.url, model="fake-1", timeout_s=0.5),
        explain=ExplainConfig(language="en"),
    )
    return runtime


def test_llm_explanation_is_labelled_stored_and_reused(
    runtime: RuntimeStub, llm_endpoint: FakeLlmEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(create_app(llm_runtime(runtime, llm_endpoint, monkeypatch)))
    card = client.get(f"/explain/{DRIFT.pattern_id}", params={"mode": "llm"}).json()
    human = client.get(f"/explain/{DRIFT.pattern_id}").json()
    assert (card["mode"], card["label"], card["llm_text"], card["llm_model"]) == (
        "llm",
        "LLM-based",
        "Volatility rose.",
        "fake-1",
    )
    assert card["summary"] == human["summary"] and card["markdown"].startswith(human["markdown"])
    request = llm_endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer llm-secret"
    assert (
        json.loads(request["body"]["messages"][1]["content"])["pattern_event"]["pattern_id"]
        == DRIFT.pattern_id
    )
    again = client.get(f"/explain/{DRIFT.pattern_id}", params={"mode": "llm"}).json()
    assert again["llm_text"] == "Volatility rose." and len(llm_endpoint.requests) == 1


@pytest.mark.parametrize(
    "behaviour, reason",
    [
        ("hang", "no answer within 0.5s"),
        ("garbage", "the LLM endpoint's answer is not a chat completion"),
        ("error", "the LLM endpoint answered HTTP 500"),
    ],
)
def test_llm_failures_fall_back_to_the_rule_based_card(
    runtime: RuntimeStub,
    llm_endpoint: FakeLlmEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: str,
    reason: str,
) -> None:
    llm_endpoint.behaviour = behaviour
    client = TestClient(create_app(llm_runtime(runtime, llm_endpoint, monkeypatch)))
    response = client.get(f"/explain/{ANOMALY.pattern_id}", params={"mode": "llm", "lang": "zh"})
    card = response.json()
    assert response.status_code == 200 and card["mode"] == "human" and card["llm_text"] is None
    assert card["note"] == f"LLM 解释不可用（{reason}）；以下为基于规则的卡片"
    assert runtime.store.count("pattern_cards") == {"": 0}  # failures are not stored


def test_llm_switched_off_is_a_note_not_an_error(client: TestClient) -> None:
    card = client.get(f"/explain/{DRIFT.pattern_id}", params={"mode": "llm"}).json()
    assert card["mode"] == "human" and "llm.enabled" in card["note"]


def test_materialize_on_clickhouse_with_llm_cards(
    runtime: RuntimeStub, llm_endpoint: FakeLlmEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = llm_runtime(runtime, llm_endpoint, monkeypatch).config
    cards = load_cards_config(runtime.config_path)
    start = datetime.fromisoformat(DAY["start"])
    result = materialize_cards(runtime.store, config, cards, start, start + timedelta(days=1))
    assert (result["cards"], result["patterns"], result["llm_cards"]) == (12, 4, 4)
    assert runtime.store.count("pattern_cards", group_by="mode") == {"human": 8, "llm": 4}
    llm_endpoint.behaviour = "error"
    again = materialize_cards(runtime.store, config, cards, start, start + timedelta(days=1))
    assert (again["cards"], again["llm_cards"]) == (8, 0)
    assert runtime.store.count("pattern_cards", group_by="mode") == {"human": 8}


# -- the whole OpenAPI surface, fuzzed --------------------------------------------------------------------


def test_no_server_errors_anywhere_in_the_api(runtime: RuntimeStub) -> None:
    """Generated requests for every operation of the OpenAPI spec; only the documented 503 may be a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime, FakeLauncher()))
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 19  # 11 of the REST API, 8 of the explorer

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(headers={"X-API-Key": KEY})
            documented = case.operation.definition.raw.get("responses", {})
            # 503 is documented (store, key or replay runner unavailable); any other 5xx is a defect.
            if response.status_code >= 500 and not (response.status_code == 503 and "503" in documented):
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )
            case.validate_response(response, checks=[status_code_conformance])

        exercise()
    assert failures == []


def test_a_card_template_naming_a_missing_field_stops_the_api_at_start(runtime: RuntimeStub) -> None:
    cards_file = runtime.config_path / "cards.yaml"
    cards_file.write_text(cards_file.read_text().replace("{contributors}", "{drivers}", 1))
    with pytest.raises(ConfigError) as error:
        create_app(runtime)
    assert (
        "cards.yaml: languages.en.types.concept_drift.summary: template references unknown field 'drivers'"
        in (str(error.value))
    )
