"""The REST poller against a real local HTTP server answering with hostile responses: each bad
response is a dead letter with its reason or a counted retry, and the poller reads on."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from qraft_core.adapters.registry import build_adapter
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig

Answer = Callable[[BaseHTTPRequestHandler], None]
GOOD = json.dumps({"data": [{"id": 1, "ts": 1767571200, "v": 1}]}).encode()


def reply(status: int, body: bytes = b"", **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def drip(handler: BaseHTTPRequestHandler) -> None:
    """Headers at once, then a byte every 0.1 s for 5 s: each read is quick, the whole is not."""
    handler.send_response(200)
    handler.send_header("Content-Length", "50")
    handler.end_headers()
    for _ in range(50):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.1)


def cut_short(handler: BaseHTTPRequestHandler) -> None:
    """Announces 1,000 bytes, sends 10 and closes the connection."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"data": [')
    handler.wfile.flush()
    handler.close_connection = True


def endless(handler: BaseHTTPRequestHandler) -> None:
    """A chunked body that never ends."""
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"[" * 65536
    for _ in range(2000):
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


class Server:
    def __init__(self, script: list[Answer]) -> None:
        self.script = script
        self.requests: list[float] = []
        self.lock = threading.Lock()

    def next(self) -> Answer:
        with self.lock:
            self.requests.append(time.monotonic())
            return self.script.pop(0) if self.script else reply(304)


@pytest.fixture
def serve() -> Iterator[Callable[[list[Answer]], tuple[str, Server]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: list[Answer]) -> tuple[str, Server]:
        scripted = Server(script)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                with contextlib.suppress(OSError):  # the client gave up
                    scripted.next()(self)

            def log_message(self, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/data", scripted

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def poll(url: str, scripted: Server, tmp_path: Path, requests: int, bus: MemoryBus | None = None,
         credentials: dict[str, str] | None = None, **options: Any) -> tuple[Any, list, list]:
    source = SourceConfig(name="r", type="rest", endpoint=url, credentials=credentials or {}, options={
        "interval_s": 0.01, "records": "$.data[*]", "timeout_s": 1.0, "max_retries": 1,
        "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "id_field": "id", "time_field": "ts",
        "conditional": False, **options})
    adapter = build_adapter(source, tmp_path)
    bus = bus or MemoryBus()

    async def run() -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(bus, stop))
        # One request past the script: the last scripted response has been handled.
        for _ in range(1000):
            if len(scripted.requests) > requests or task.done():
                break
            await asyncio.sleep(0.01)
        stop.set()
        return await asyncio.wait_for(task, 10)

    stats = asyncio.run(run())
    events, letters = bus.published()
    return stats, events, letters


@pytest.mark.parametrize(("answer", "reason"), [
    (reply(200, b"<html><body>502 Bad Gateway</body></html>", Content_Type="text/html"),
     "response is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (reply(200, b"42"), "response holds no records at $.data[*]: no $.data (found int)"),
    (reply(200, b'"maintenance"'), "response holds no records at $.data[*]: no $.data (found str)"),
    (reply(200, b'{"error": "rate limited", "code": 7}'),
     "response holds no records at $.data[*]: no $.data (found an object with keys: error, code)"),
    (reply(200, b'{"data": 5}'), "response holds no records at $.data[*]: no $.data[*] (found int)"),
    (reply(200, b"[" * 100_000 + b"]" * 100_000), "response is not JSON: nested too deeply"),
    (reply(200, b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "record is not JSON: nested too deeply"),
    (reply(200, b'{"data": [' + b"[" * 100_000 + b"]}"), "response is not JSON: nested too deeply"),
    (reply(200, b'{"data": [[[[[[1]]]]]]}'), "record is not a JSON object"),
    (reply(200, b'{"data": [{"id": 9, "v": 1}]}'), "record has no time field 'ts'"),
    (reply(200, b"\xfe\xfa{}"), "response is not JSON: 'utf-8' codec can't decode byte 0xfe in position 0"),
    (reply(200, b"not gzip at all", Content_Encoding="gzip"),
     "response cannot be decoded (Content-Encoding gzip): "),
    (reply(200, gzip.compress(b"[" * 3_000_000), Content_Encoding="gzip"), "response is oversize: more than 1048576 bytes (max_body_bytes)"),
    (endless, "response is oversize: more than 1048576 bytes (max_body_bytes)"),
])
def test_a_hostile_response_is_a_dead_letter_and_the_next_poll_reads_on(serve, tmp_path, answer, reason):
    url, scripted = serve([answer, reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=2, max_body_bytes=1024 * 1024)
    assert [letter["reason"][: len(reason)] for letter in letters] == [reason]
    assert len(letters[0]["raw"]) <= 16 * 1024
    assert [e["event_id"] for e in events] == ["r:1"]
    assert (stats.dead_lettered, stats.published) == (1, 1)


def test_an_empty_page_is_no_records_and_no_dead_letter(serve, tmp_path):
    url, scripted = serve([reply(200, b'{"data": []}'), reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=2)
    assert (letters, [e["event_id"] for e in events]) == ([], ["r:1"])


def test_the_same_page_twice_is_published_once_and_a_repeated_bad_page_is_one_dead_letter(serve, tmp_path):
    url, scripted = serve([reply(200, GOOD), reply(200, GOOD), reply(200, b"<html>"), reply(200, b"<html>"),
                           reply(200, GOOD.replace(b'"v": 1', b'"v": 2'))])
    stats, events, letters = poll(url, scripted, tmp_path, requests=5)
    # The bus keeps one message per event id; the adapter published the two versions.
    assert [(e["event_id"], e["payload"]["v"]) for e in events] == [("r:1", 1)]
    assert [letter["raw"] for letter in letters] == ["<html>"]
    assert (stats.published, stats.dead_lettered) == (2, 1)


def test_a_server_dripping_bytes_times_out_as_a_whole_and_is_retried(serve, tmp_path):
    url, scripted = serve([drip, reply(200, GOOD)])
    started = time.monotonic()
    stats, events, letters = poll(url, scripted, tmp_path, requests=2, timeout_s=0.5)
    assert time.monotonic() - started < 4  # not the 5 s the drip lasts
    assert ([e["event_id"] for e in events], letters) == (["r:1"], [])
    assert stats.errors == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retry_after_is_honoured_on_429_and_5xx_and_a_broken_one_falls_back_to_backoff(serve, tmp_path, status):
    url, scripted = serve([reply(status, b"busy", Retry_After="0.4"), reply(status, b"busy", Retry_After="nan"),
                           reply(status, b"busy", Retry_After="Mon, 05 Jan 2026 00:00:10 -0000"),
                           reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=4, max_retries=3)
    times = scripted.requests
    assert times[1] - times[0] >= 0.4
    assert [e["event_id"] for e in events] == ["r:1"] and letters == []
    assert stats.errors == 3


def test_a_huge_error_page_is_a_retry_not_a_dead_letter(serve, tmp_path):
    url, scripted = serve([reply(503, b"<html>" + b"x" * 3_000_000), reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=2, max_body_bytes=1024 * 1024)
    assert ([e["event_id"] for e in events], letters, stats.errors) == (["r:1"], [], 1)


def test_a_body_cut_short_is_a_counted_retry_not_a_dead_letter(serve, tmp_path):
    url, scripted = serve([cut_short, reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=2)
    assert ([e["event_id"] for e in events], letters, stats.errors) == (["r:1"], [], 1)


def test_a_redirect_loop_is_not_followed_and_counted(serve, tmp_path):
    url, scripted = serve([reply(302, Location="/data"), reply(301, Location="/data"), reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=3)
    assert ([e["event_id"] for e in events], letters, stats.errors) == (["r:1"], [], 2)


def page(*records: bytes) -> bytes:
    return b'{"data": [' + b", ".join(records) + b'], "next": null}'


def good(record_id: int) -> bytes:
    return json.dumps({"id": record_id, "ts": 1767571200 + record_id}).encode()


@pytest.mark.parametrize(("bad", "reason"), [
    (b'{"id": 9, "ts": 1767571200, "v": ' + b"9" * 4400 + b"}",
     "record is not JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 4400 digits"),
    (b'{"id": 9, "ts": 1767571200, "v": ' + b"[" * 2000 + b"]" * 2000 + b"}", "record is not JSON: nested too deeply"),
    (b'{"id": 9, "ts": 1767571200, "v": "\\x"}', "record is not JSON: Invalid \\escape: line 1 column 35 (char 34)"),
])
def test_a_record_json_cannot_read_is_its_own_dead_letter_and_the_rest_of_the_page_is_published(
    serve, tmp_path, bad, reason
):
    url, scripted = serve([reply(200, page(good(1), good(2), bad, good(3)))])
    stats, events, letters = poll(url, scripted, tmp_path, requests=1)
    assert [e["event_id"] for e in events] == ["r:1", "r:2", "r:3"]
    assert [letter["reason"][: len(reason)] for letter in letters] == [reason]
    assert letters[0]["raw"] == bad[:16 * 1024].decode()
    assert (stats.published, stats.dead_lettered) == (3, 1)


def test_a_page_read_one_by_one_follows_the_records_path_and_a_broken_list_is_one_more_letter(serve, tmp_path):
    huge = b'{"id": 9, "ts": 1767571200, "v": ' + b"9" * 4400 + b"}"
    broken = b'{"meta": {"total": 3}, "data": [' + good(1) + b", " + huge + b", " + good(2) + b" " + good(3) + b"]}"
    url, scripted = serve([reply(200, broken)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=1)
    assert [e["event_id"] for e in events] == ["r:1", "r:2"]
    assert [letter["reason"] for letter in letters] == [
        "record is not JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 4400 "
        "digits; use sys.set_int_max_str_digits() to increase the limit",
        "response is not JSON after its last readable record: expected ',' or ']' at char 4525",
    ]


@pytest.mark.parametrize("answer", [reply(204), reply(200, b""), reply(200, b" \r\n")])
def test_an_empty_body_is_no_records_not_a_dead_letter(serve, tmp_path, answer):
    url, scripted = serve([answer, reply(200, GOOD)])
    stats, events, letters = poll(url, scripted, tmp_path, requests=2)
    assert ([e["event_id"] for e in events], letters, stats.errors) == (["r:1"], [], 0)


def test_one_response_keeps_at_most_100_dead_letters_in_few_messages_and_counts_the_rest(serve, tmp_path):
    records = [b"{}"] * 5000 + [good(1)] + [b'{"id": 2}'] * 10
    url, scripted = serve([reply(200, b'{"data": [' + b",".join(records) + b"]}")])
    bus = MemoryBus()
    stats, events, letters = poll(url, scripted, tmp_path, requests=1, bus=bus)
    assert [e["event_id"] for e in events] == ["r:1"]
    assert [letter["reason"] for letter in letters] == ["record has no time field 'ts'"] * 100 + [
        "4910 more records of this response are not events; they are not kept one by one "
        "(at most 100 dead letters a response). The first of them: record has no time field 'ts'"]
    assert letters[-1]["raw"] == "{}"
    assert (stats.published, stats.dead_lettered) == (1, 101)
    # The events in one message, the letters in messages of many: 101 letters of ~110 bytes fit one.
    assert len(bus.queue) == 2


def echo_redirect(handler: BaseHTTPRequestHandler) -> None:
    reply(301, Location="https://example.com" + handler.path)(handler)


def echo_not_found(handler: BaseHTTPRequestHandler) -> None:
    reply(404, b"not found: " + handler.path.encode())(handler)


def test_a_secret_in_a_url_the_server_echoes_is_masked_in_its_url_encoded_forms(
    serve, tmp_path, monkeypatch, caplog
):
    # Not a secret by its name: only `credentials` says it is one.
    monkeypatch.setenv("QRAFT_TEST_PROBE", "s3cr3t+key/with=chars")
    url, scripted = serve([echo_redirect, echo_not_found, reply(200, GOOD)])
    with caplog.at_level(logging.WARNING, logger="qraft_core.adapters.live"):
        stats, events, letters = poll(url.replace("/data", "/api/{tok}/data"), scripted, tmp_path, requests=3,
                                      credentials={"tok": "QRAFT_TEST_PROBE"}, params={"apikey": "{tok}"})
    assert [r.getMessage() for r in caplog.records] == [
        "source r: HTTP 301 redirect to https://example.com/api/***/data?apikey=*** not followed "
        "(set the endpoint to it); not retried",
        "source r: HTTP 404: not found: /api/***/data?apikey=***; not retried",
    ]
    assert ([e["event_id"] for e in events], stats.errors) == (["r:1"], 2)
