"""API read throughput: `GET /patterns` and `GET /explain/{id}` over HTTP with 4 clients, in requests/s.

A server process runs the real app (uvicorn, as `qraft api` runs it: the
embedded store kept open) on a fresh chDB store holding 29 findings of one
day (the size of the demo's) with their clean context. This process runs 4
client threads, each with its own connection, for a fixed number of requests
and reports throughput and p99 latency. Baseline (same run, same store): the
same work called straight on the store in one thread, with no HTTP and no
cache (`patterns_page` + JSON for a page; `load_pattern` + `explain_pattern`
+ JSON for a card). Then 200 parallel annotation writes are timed, and
`/patterns` again on a server with the response cache off.
Prints JSON lines {"bench","value","unit","baseline","ratio", "p99_ms"}.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from qraft_core.config import ApiConfig, QraftConfig
from qraft_core.events import PatternEvent
from qraft_core.explain.catalog import PatternQuery, load_pattern, parse_time, patterns_page
from qraft_core.explain.materialize import explain_pattern
from qraft_core.explain.templates import load_cards_config
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns, pattern_rows
from qraft_core.store import ClickHouseStore, open_store
from qraft_core.store.sessions import ENGINE

REPO = Path(__file__).resolve().parents[1]
FINDINGS = 29
CLIENTS = 4
REQUESTS_PER_CLIENT = 400
BASELINE_CALLS = 100
WRITES = 200
KEY = "bench-key-0123456789"
DAY = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}


@dataclass
class BenchRuntime:
    config: QraftConfig
    config_path: Path
    store: ClickHouseStore
    data_dir: Path


def findings() -> list[PatternEvent]:
    """29 findings spread over the context window of the examples (copies with their own ids)."""
    bases = example_patterns()
    return [
        base.model_copy(
            update={
                "pattern_id": f"bench-{n:02d}-{base.pattern_id[:8]}",
                "timestamp": base.timestamp + timedelta(seconds=n),
            }
        )
        for n, base in ((n, bases[n % len(bases)]) for n in range(FINDINGS))
    ]


def serve(data_dir: Path, port: int, cache: bool) -> None:
    import uvicorn

    from qraft_core.api import create_app

    api = ApiConfig() if cache else ApiConfig(cache_max_mb=0)
    config = QraftConfig(data_dir=data_dir, api=api)
    store = open_store(
        f"chdb://{data_dir / 'clickhouse'}", keep_open_s=config.api.store_keep_open_s
    )
    runtime = BenchRuntime(config, REPO / "config", store, data_dir)
    uvicorn.run(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rate(calls: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return calls / (time.perf_counter() - started)


def baselines(data_dir: Path, pattern_id: str) -> tuple[float, float]:
    store = open_store(f"chdb://{data_dir / 'clickhouse'}", keep_open_s=30)
    config = QraftConfig(data_dir=data_dir)
    cards = load_cards_config(REPO / "config")
    query = PatternQuery(parse_time(DAY["start"], "start"), parse_time(DAY["end"], "end"))

    def page() -> bytes:
        items, _ = patterns_page(store, query, 100)
        return json.dumps([p.model_dump(mode="json") for p in items]).encode()

    def card() -> bytes:
        pattern = load_pattern(store, pattern_id)
        assert pattern is not None
        return json.dumps(
            explain_pattern(store, config, cards, pattern, "en").model_dump(mode="json")
        ).encode()

    with store.session():
        result = rate(BASELINE_CALLS, page), rate(BASELINE_CALLS, card)
    return result


def load(url: str, path: str, params: dict[str, str]) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) of CLIENTS closed-loop clients."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(REQUESTS_PER_CLIENT):
                began = time.perf_counter()
                response = http.get(path, params=params)
                mine.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:200]}")
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(CLIENTS)]:
            future.result()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(0.99 * (len(latencies) - 1))] * 1000


def writes(url: str, pattern_ids: list[str]) -> float:
    def write(n: int) -> int:
        with httpx.Client(base_url=url, timeout=60) as http:
            return http.post(
                f"/pattern/{pattern_ids[n % len(pattern_ids)]}/annotations",
                json={"label": "note", "note": f"bench {n}"},
                headers={"X-API-Key": KEY},
            ).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(write, range(WRITES)))
    if set(statuses) != {201}:
        raise RuntimeError(f"writes failed: {sorted(set(statuses))}")
    return WRITES / (time.perf_counter() - started)


def line(name: str, value: float, unit: str, baseline: float, **extra: float) -> None:
    record = {"bench": name, "value": round(value, 1), "unit": unit, "baseline": round(baseline, 1)}
    record["ratio"] = round(value / baseline, 2) if baseline else None
    print(json.dumps({**record, **{k: round(v, 1) for k, v in extra.items()}}), flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qraft-bench-api-") as scratch:
        data_dir = Path(scratch)
        patterns = findings()
        store = open_store(f"chdb://{data_dir / 'clickhouse'}")
        with store.session():
            store.insert("clean_events", example_clean_events())
            store.insert("pattern_events", pattern_rows(patterns))
        patterns_base, explain_base = baselines(data_dir, patterns[0].pattern_id)
        ENGINE.close()  # the server process takes the store
        with api_server(data_dir, cache=True) as url:
            patterns_rps, patterns_p99 = load(url, "/patterns", DAY)
            line("api_patterns_rps", patterns_rps, "req/s", patterns_base, p99_ms=patterns_p99)
            explain_rps, explain_p99 = load(url, f"/explain/{patterns[0].pattern_id}", {})
            line("api_explain_rps", explain_rps, "req/s", explain_base, p99_ms=explain_p99)
            line(
                "api_annotation_writes_per_s",
                writes(url, [p.pattern_id for p in patterns]),
                "req/s",
                0.0,
            )
        # The same page with the response cache off: what the long-lived store session gives alone.
        with api_server(data_dir, cache=False) as url:
            uncached_rps, uncached_p99 = load(url, "/patterns", DAY)
            line(
                "api_patterns_uncached_rps",
                uncached_rps,
                "req/s",
                patterns_base,
                p99_ms=uncached_p99,
            )


@contextmanager
def api_server(data_dir: Path, cache: bool) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(data_dir),
            str(port),
            "cache" if cache else "no-cache",
        ],
        env={**os.environ, "QRAFT_API_KEY": KEY},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"the API server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the API server did not answer within 60 s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "cache")
    else:
        main()
