"""Fault drills on the source supervisor: adapters that crash, hang on stop or fail to publish,
and a sources.yaml that is deleted, emptied, half-written or a YAML bomb while sources run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qraft_core import supervisor as supervisor_module
from qraft_core.adapters.base import AdapterStats
from qraft_core.adapters.live import StateNotSaved
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import SourceConfig
from qraft_core.supervisor import SourceSupervisor


class Steady:
    """Runs until stopped."""

    runs = 0

    async def run(self, publisher: Any, stop: asyncio.Event) -> AdapterStats:
        type(self).runs += 1
        await stop.wait()
        return AdapterStats()


class Crashing:
    async def run(self, publisher: Any, stop: asyncio.Event) -> AdapterStats:
        raise RuntimeError("adapter bug")


class Deaf:
    """Ignores the stop event: only cancelling ends it."""

    async def run(self, publisher: Any, stop: asyncio.Event) -> AdapterStats:
        await asyncio.sleep(3600)
        return AdapterStats()


class FailingBus:
    async def publish_raw(self, *args: Any) -> None:
        raise ConnectionError("bus is down")


class Publishing:
    async def run(self, publisher: Any, stop: asyncio.Event) -> AdapterStats:
        await publisher.publish_raw("s", b"{}")
        return AdapterStats()


class Unsaved:
    """Its position cannot be written (a full disk)."""

    async def run(self, publisher: Any, stop: asyncio.Event) -> AdapterStats:
        raise StateNotSaved("/data/state/unsaved.cursor.json: state cannot be written (No space left on device)")


KINDS = {"steady": Steady, "crashing": Crashing, "deaf": Deaf, "publishing": Publishing, "unsaved": Unsaved}


def sources(*names: str) -> str:
    return yaml.safe_dump({"sources": [{"name": n, "type": "watcher", "endpoint": "/nowhere"} for n in names]})


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def fake_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    # The adapter is chosen by the source's name; the file is still checked as sources.yaml.
    def build(config: SourceConfig, state_dir: Path, where: str = "") -> Any:
        return KINDS[config.name]()

    monkeypatch.setattr(supervisor_module, "build_adapter", build)
    Steady.runs = 0


def test_crashing_hanging_and_publish_failing_sources_never_touch_the_steady_one(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(sources("steady", "crashing", "deaf", "publishing"))
    supervisor = SourceSupervisor(tmp_path, tmp_path / "state", FailingBus(), poll_s=0.01,  # type: ignore[arg-type]
                                  restart_initial_s=0.01, restart_max_s=0.02, stop_grace_s=0.2)

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: all(n in supervisor.running and supervisor.running[n].restarts >= 3
                                for n in ("crashing", "publishing")),
                    "the failing sources to be restarted")
        status = supervisor.status()
        stop.set()
        await asyncio.wait_for(task, 5)  # the deaf source is cancelled after stop_grace_s
        return status

    status = asyncio.run(scenario())
    assert status["steady"] == {"status": "running", "restarts": 0, "last_error": ""}
    assert status["deaf"] == {"status": "running", "restarts": 0, "last_error": ""}
    assert status["crashing"]["status"] == "failing"
    assert status["crashing"]["last_error"] == "RuntimeError: adapter bug"
    assert status["publishing"]["last_error"] == "ConnectionError: bus is down"
    assert Steady.runs == 1
    assert supervisor.running == {}


def test_a_position_that_cannot_be_saved_is_logged_in_one_line_at_every_restart(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "sources.yaml").write_text(sources("unsaved"))
    supervisor = SourceSupervisor(tmp_path, tmp_path / "state", MemoryBus(), poll_s=0.01,
                                  restart_initial_s=0.01, restart_max_s=0.02)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: "unsaved" in supervisor.running and supervisor.running["unsaved"].restarts >= 2,
                    "the source to be restarted")
        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level("ERROR", logger="qraft_core.supervisor"):
        asyncio.run(scenario())
    failures = [record for record in caplog.records if record.getMessage().startswith("source unsaved failed")]
    assert len(failures) >= 2
    assert not any(record.exc_info for record in failures)
    assert failures[0].getMessage().startswith(
        "source unsaved failed (StateNotSaved: /data/state/unsaved.cursor.json: state cannot be written "
        "(No space left on device)); restarting in ")


@pytest.mark.parametrize(("damage", "expected"), [
    (None, "file not found"),
    (b"", "<top>: expected a mapping of keys, the file is empty"),
    (b"sources:\n  - name: steady\n    type: watch", "sources[0].type: unknown source type 'watch'"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8)),
     "<top>: expected at most 100000 values"),
    (b"sources: {name: steady}", "sources: expected a list, got a mapping"),
])
def test_a_damaged_sources_file_leaves_the_running_sources_alone(tmp_path: Path, damage: bytes | None,
                                                                 expected: str, caplog: Any) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(sources("steady"))
    supervisor = SourceSupervisor(tmp_path, tmp_path / "state", MemoryBus(), poll_s=0.01)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: supervisor.status().get("steady", {}).get("status") == "running", "the start")
        running = supervisor.running["steady"]
        if damage is None:
            path.unlink()
        else:
            path.write_bytes(damage)
        await until(lambda: supervisor.rejected == 1, "the damage to be refused")
        path.write_text(sources("steady"))  # repaired: the same source, not restarted
        await until(lambda: supervisor.reloads == 2, "the repaired file to be read")
        assert supervisor.running["steady"] is running
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert Steady.runs == 1
    refused = [r.getMessage() for r in caplog.records if "was not applied" in r.getMessage()]
    assert len(refused) == 1 and expected in refused[0] and str(path) in refused[0]
