"""Fixtures shared by every test layer: real embedded ClickHouse and NATS, and their fakes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qraft_core import tracking
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.store import ClickHouseStore, open_store
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_tracking_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's trackers share a pause of their own: a tracking failure in one test (which skips
    that URI for minutes) does not silence the trackers of the next."""
    monkeypatch.setattr(tracking, "process_pause", tracking.TrackingPause())


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def chdb_store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    """A real embedded ClickHouse (chDB) in a fresh directory, migrated."""
    yield open_store(f"chdb://{tmp_path / 'clickhouse'}", lock_timeout_s=30)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server with JetStream on a free loopback port."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the bundled config whose data directory is private to the test."""
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QRAFT_CONFIG_DIR", str(target))
    monkeypatch.chdir(REPO)
    return target


def _demo_config(base: Path, target: Path, demo: Path, capymoa: bool) -> Path:
    """A copy of `base` whose file sources read `demo`, with the CapyMOA detectors on or off."""
    import yaml

    shutil.copytree(base, target)
    sources = yaml.safe_load((target / "sources.yaml").read_text())
    for source in sources["sources"]:
        source["endpoint"] = str(demo / Path(source["endpoint"]).name)
    (target / "sources.yaml").write_text(yaml.safe_dump(sources))
    if not capymoa:
        detectors = yaml.safe_load((target / "detectors.yaml").read_text())
        for spec in detectors["detectors"]:
            if spec["engine"] == "capymoa":
                spec["enabled"] = False
        (target / "detectors.yaml").write_text(yaml.safe_dump(detectors))
    return target


@pytest.fixture(scope="session")
def demo_config():  # type: ignore[no-untyped-def]
    """Makes config copies over a demo folder: demo_config(base, target, demo, capymoa)."""
    return _demo_config


def run_async(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)
