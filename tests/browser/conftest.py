"""A real explorer to drive: the first 31 minutes of the seeded demo (its first two planted anomalies) run through the real
pipeline (files → NATS → lander → chDB → Dagster ranged run), the API on a free port with
the replay runner `qraft api` uses, and the system Chromium driven by Playwright.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SLICE_END = datetime(2026, 1, 5, 0, 31, tzinfo=UTC)
API_KEY = "browser-test-key"


def _demo_slice(demo: Path, end: datetime) -> None:
    """Keep the demo records before `end` (malformed lines among them stay: they are part of the data)."""
    end_ms = int(end.timestamp() * 1000)
    kept = []
    for line in (demo / "trades.jsonl").read_text().splitlines():
        try:
            trade_time = json.loads(line)["T"]
        except (ValueError, KeyError, TypeError):
            kept.append(line)
            continue
        if trade_time >= end_ms:
            break
        kept.append(line)
    (demo / "trades.jsonl").write_text("\n".join(kept) + "\n")
    header, *rows = (demo / "news.csv").read_text().splitlines()
    cutoff = end.strftime("%Y-%m-%dT%H:%M:%S")
    (demo / "news.csv").write_text("\n".join([header, *(r for r in rows if r.split(",")[1] < cutoff)]) + "\n")


@pytest.fixture(scope="module")
def explorer_store(tmp_path_factory: pytest.TempPathFactory, demo_config: Any) -> Iterator[Any]:
    """A runtime whose store holds the pipeline's output on the demo slice."""
    from qraft_core.bus.embedded import EmbeddedNats
    from qraft_core.demo.generate import generate_demo
    from qraft_core.runtime import Runtime
    from qraft_core.services.pipeline import publish_sources, run_lander
    from qraft_dagster.runner import DagsterPipelineRunner

    root = tmp_path_factory.mktemp("explorer")
    demo = root / "demo"
    generate_demo(demo)
    _demo_slice(demo, SLICE_END)
    # River only: the JVM start of CapyMOA would dominate these tests.
    config = demo_config(REPO / "config", root / "config", demo, capymoa=False)
    settings = {
        "QRAFT_DATA_DIR": str(root / "data"),
        "QRAFT_CONFIG_DIR": str(config),
        "QRAFT_API_KEY": API_KEY,
        # The slice ends abruptly: its last window is closed at once.
        "QRAFT_PARTITIONS_ALLOWED_LATENESS_S": "0",
        # Run records are not what these tests look at; creating the MLflow database is slow.
        "QRAFT_MLFLOW_ENABLED": "false",
    }
    server = EmbeddedNats(root / "nats").start()
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**settings, "QRAFT_NATS_URL": server.url}.items():
            env.setenv(key, value)
        try:
            rt = Runtime.load(config)
            asyncio.run(publish_sources(rt))
            asyncio.run(run_lander(rt, until_idle=True))
        finally:
            server.stop()
        outcome = DagsterPipelineRunner(rt).run_due(lambda run_key, succeeded: None)
        assert outcome.failed == 0, outcome
        yield rt


@pytest.fixture(scope="module")
def explorer_url(explorer_store: Any) -> Iterator[str]:
    """The API with the explorer, served on a free port with the replay runner `qraft api` uses."""
    from qraft_cli import REPLAY_WORKER
    from qraft_core.api import create_app
    from qraft_core.api.explorer.screenshots import serve
    from qraft_core.bootstrap import bootstrap

    # Its own runtime (and store object): the tests read the store beside the serving thread.
    found = bootstrap(explorer_store.config_path, replay_worker=REPLAY_WORKER)
    with serve(create_app(found.runtime, found.replay_launcher)) as url:
        yield url


@pytest.fixture
def write_key() -> str:
    """The key the API expects for writes (set in its environment by `explorer_store`)."""
    return API_KEY


@pytest.fixture(scope="module")
def browser(explorer_url: str) -> Iterator[Any]:
    # After the store is filled: Playwright's sync API runs an event loop in this thread,
    # and the pipeline's set-up runs its own.
    from qraft_core.api.explorer.screenshots import chromium_path, launch_chromium

    if chromium_path() is None:
        pytest.skip("no Chromium: `make browser-deps` installs it with apt-get (needs root and Debian's archive)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (uv sync)")
    with sync_api.sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, explorer_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
