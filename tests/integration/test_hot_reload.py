"""The supervisor follows edits of sources.yaml without disturbing the sources that did not change."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qraft_core.bus.fake import MemoryBus
from qraft_core.supervisor import SourceSupervisor


def watched(name: str, folder: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "watcher", "endpoint": str(folder), "owner": "ops",
            "options": {"pattern": "*.jsonl", "id_field": "id", "time_field": "ts", "interval_s": 0.02},
            **extra}


def write_sources(config: Path, sources: list[dict[str, Any]]) -> None:
    (config / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))


def published_ids(bus: MemoryBus) -> set[str]:
    return {json.loads(line).get("event_id", "dead") for m in bus.queue for line in m.data.split(b"\n")}


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_add_change_remove_invalid_edit_and_crash(
    tmp_path: Path, chdb_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QRAFT_TEST_MISSING_SECRET", raising=False)
    config = tmp_path / "config"
    config.mkdir()
    folders = {name: tmp_path / name for name in ("a", "b", "c", "keep")}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "1.jsonl").write_text(json.dumps({"id": f"{name}1", "ts": 1767571200}) + "\n")
    write_sources(config, [watched("a", folders["a"]), watched("b", folders["b"]),
                           watched("keep", folders["keep"])])
    bus = MemoryBus()
    supervisor = SourceSupervisor(config, tmp_path / "state", bus, chdb_store, poll_s=0.02,
                                  restart_initial_s=0.02, restart_max_s=0.05)

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: published_ids(bus) >= {"a:a1", "b:b1", "keep:keep1"}, "the first events")
        kept = supervisor.running["keep"]
        old_b = supervisor.running["b"]

        # Remove a, change b, add c, leave keep alone.
        write_sources(config, [watched("b", folders["b"], owner="new-owner"), watched("c", folders["c"]),
                               watched("keep", folders["keep"])])
        await until(lambda: "c:c1" in published_ids(bus), "the added source")
        assert sorted(supervisor.running) == ["b", "c", "keep"]
        assert supervisor.running["keep"] is kept and kept.task is not None and not kept.task.done()
        assert supervisor.running["b"] is not old_b and old_b.task is not None and old_b.task.done()
        (folders["a"] / "2.jsonl").write_text(json.dumps({"id": "a2", "ts": 1767571201}) + "\n")
        (folders["keep"] / "2.jsonl").write_text(json.dumps({"id": "keep2", "ts": 1767571201}) + "\n")
        await until(lambda: "keep:keep2" in published_ids(bus), "the untouched source to go on")

        # An invalid edit is refused; everything keeps running.
        (config / "sources.yaml").write_text("sources:\n  - name: b\n    type: carrier_pigeon\n")
        await until(lambda: supervisor.rejected == 1, "the invalid edit to be refused")
        assert sorted(supervisor.running) == ["b", "c", "keep"]

        # A source that cannot start (its secret is missing) is retried; the others are untouched.
        write_sources(config, [watched("b", folders["b"], owner="new-owner"), watched("c", folders["c"]),
                               watched("keep", folders["keep"]),
                               watched("locked", folders["c"],
                                       credentials={"key": "QRAFT_TEST_MISSING_SECRET"})])
        await until(lambda: "locked" in supervisor.running and supervisor.running["locked"].restarts >= 2,
                    "the failing source to be retried")
        status = supervisor.status()
        stop.set()
        await asyncio.wait_for(task, 10)
        return status

    status = asyncio.run(scenario())
    assert "a:a2" not in published_ids(bus)  # a was stopped
    assert status["locked"]["status"] == "failing"
    assert "QRAFT_TEST_MISSING_SECRET is not set" in status["locked"]["last_error"]
    assert all(status[n]["restarts"] == 0 for n in ("b", "c", "keep"))
    assert supervisor.running == {}
    audit = chdb_store.select("audit_log", order_by=["ts"])
    assert [(r["action"], r["target"]) for r in audit.iter_rows(named=True)] == [
        ("sources.start", str(config / "sources.yaml")),
        ("source.remove", "a"),
        ("source.change", "b"),
        ("source.add", "c"),
        ("sources.reload_rejected", str(config / "sources.yaml")),
        ("source.add", "locked"),
    ]
    rejected = audit.filter(audit["action"] == "sources.reload_rejected")["detail"][0]
    assert "sources[0].type: unknown source type 'carrier_pigeon'" in rejected
    registry = {row["name"]: row for row in chdb_store.select("source_registry").iter_rows(named=True)}
    assert {name: row["status"] for name, row in registry.items()} == {
        "a": "removed", "b": "running", "c": "running", "keep": "running", "locked": "failing",
    }
    assert registry["b"]["owner"] == "new-owner"


def test_sources_run_uses_the_configured_bus_and_store(
    config_dir: Path, nats_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qraft_cli.sources import run_sources
    from qraft_core.bus.nats_bus import NatsBus
    from qraft_core.runtime import Runtime

    monkeypatch.setenv("QRAFT_NATS_URL", nats_server.url)
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "1.jsonl").write_text(json.dumps({"id": "x1", "ts": 1767571200}) + "\n")
    write_sources(config_dir, [watched("drop", folder)])
    rt = Runtime.load(config_dir)

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sources(rt, poll_s=0.05, stop=stop))
        subjects: list[str] = []
        async with NatsBus(nats_server.url, rt.stream_settings) as bus:
            await until(lambda: task.done() or (rt.state_dir / "drop.watch.json").exists(), "the first scan")
            await bus.subscribe("run-test")
            for _ in range(3):  # nats-py sometimes raises a plain TimeoutError that NatsBus.fetch lets out
                with contextlib.suppress(TimeoutError):
                    subjects += [m.subject for m in await bus.fetch(10, 2.0)]
                    break
            await bus._sub.unsubscribe()  # a pull subscription left open makes drain() wait 30s
        stop.set()
        await asyncio.wait_for(task, 20)
        return subjects

    assert asyncio.run(scenario()) == ["qraft.raw.drop"]
    audit = rt.store.select("audit_log")
    assert audit["action"].to_list() == ["sources.start"]
    assert rt.store.select("source_registry")["status"].to_list() == ["running"]
