"""Single-fault drills on the parts `qraft up` runs: each fault ends in a recovery or one clear error.

A full disk under the bus: a publish fails at once with the reason (not after
`nats.publish_timeout_s` of retries), whether JetStream refuses for want of room or its
store failed on a write (it then answers but stores nothing, even once space is freed, until
`revive` restarts it, which `qraft up` asks every half second).
The supervisor of `qraft up` killed with SIGKILL: its children stop with it, so the next start does
not run a second lander and second sources beside them. A second `qraft up` on the same data
directory is refused with one line naming the running one; the lock a killed one left does not count.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qraft_core.bus.base import BusCannotStore, StreamSettings
from qraft_core.bus.embedded import (
    EmbeddedNats,
    _port_open,
    free_port,
    nats_server_binary,
    process_alive,
)
from qraft_core.bus.nats_bus import NatsBus
from qraft_core.config import QraftConfig
from qraft_core.runtime import Runtime
from qraft_core.supervisor import ProcessSupervisor
from tests.chaos.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
MESSAGE = b"x" * 20_000


async def publish_until_refused(url: str, before_refusal: int, fill: Path | None = None) -> tuple[int, str]:
    """Publish `before_refusal` messages, fill the disk at `fill` (if given), then publish until refused:
    how many the stream stored after the first ones, and the refusal."""
    bus = await NatsBus(url, StreamSettings()).connect()
    try:
        for index in range(before_refusal):
            await bus.publish_raw("drill", MESSAGE, f"before-{index}")
        if fill is not None:
            with fill.open("wb") as handle, pytest.raises(OSError):
                while True:
                    handle.write(b"\0" * 1_000_000)
                    handle.flush()
        stored = 0
        with pytest.raises(BusCannotStore) as refused:
            while True:
                await bus.publish_raw("drill", MESSAGE, f"after-{stored}")
                stored += 1
        return stored, str(refused.value)
    finally:
        await bus.close()


def test_a_store_limit_reached_fails_the_publish_at_once_naming_the_reason(tmp_path):
    config = tmp_path / "nats-server.conf"
    config.write_text(f'jetstream {{\n  store_dir: "{tmp_path / "js"}"\n  max_file_store: 1MB\n}}\n')
    port = free_port()
    process = subprocess.Popen([nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _port_open(port), timeout_s=15)
        stored, reason = asyncio.run(publish_until_refused(f"nats://127.0.0.1:{port}", 0))
    finally:
        process.terminate()
        process.wait()
    # 1 MiB holds 53 messages of 20 kB (and their headers); the 54th is refused, not retried.
    assert stored == 53
    assert "no room to store messages (insufficient resources, JetStream error 10023)" in reason


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 20 MB tmpfs (root only: a real `no space left on device` under the server)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_disk_filled_under_the_running_server_fails_the_publish_and_a_revive_restores_it(small_disk):
    server = EmbeddedNats(small_disk / "nats").start()
    try:
        stored, reason = asyncio.run(publish_until_refused(server.url, 5, fill=small_disk / "filler"))
        (small_disk / "filler").unlink()
        assert "no space left on device" in (server.store_failure() or "")
        # Restarted, it stores again; before, it stored nothing (with room again) until restarted by hand.
        assert server.revive()
        assert asyncio.run(stream_size_after_one_more(server.url)) == 6
    finally:
        server.stop()
    # The server failed its write and answers no publish since; three stalled attempts end it.
    assert stored == 0
    assert "answers but stored none of 3 attempts" in reason


def test_up_names_the_failed_store_write_it_restarted_the_server_for_and_a_death_as_such(small_disk):
    rt = Runtime(config=QraftConfig(data_dir=small_disk), config_path=small_disk)
    server = rt.embedded_nats()
    try:
        asyncio.run(publish_until_refused(server.url, 5, fill=small_disk / "filler"))
        (small_disk / "filler").unlink()
        failure = server.store_failure()
        after_failure = rt.revive_embedded_nats(server)
        assert rt.revive_embedded_nats(server) is None  # the new server has failed no write
        os.kill(server.pid, signal.SIGKILL)
        assert wait_for(lambda: not process_alive(server.pid), timeout_s=15)
        after_death = rt.revive_embedded_nats(server)
    finally:
        rt.stop_owned_services()
    assert failure is not None
    assert "no space left on device" in failure
    assert after_failure == f"the embedded nats-server failed a store write; restarted it at {server.url}: {failure}"
    assert after_death == f"the embedded nats-server had died; restarted it at {server.url}"


async def stream_size_after_one_more(url: str) -> int:
    bus = await NatsBus(url, StreamSettings()).connect()
    try:
        await bus.publish_raw("drill", MESSAGE, "after-the-revive")
        return await bus.stream_messages()
    finally:
        await bus.close()


SUPERVISE_A_SLEEP = """
import sys, time
from pathlib import Path
from qraft_core.bus.embedded import EmbeddedNats
from qraft_core.supervisor import ProcessSupervisor
supervisor = ProcessSupervisor({"sleeper": [sys.executable, "-c", "import time; time.sleep(600)"]}, {}, Path(sys.argv[1]))
supervisor.start()
server = EmbeddedNats(Path(sys.argv[1]) / "nats").start() if sys.argv[2:] == ["--nats"] else None
print(supervisor.children["sleeper"].process.pid, server.pid if server else 0, flush=True)
time.sleep(600)
"""


def supervised_sleeper(log_dir: Path, *options: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A process supervising one sleeping child (and with `--nats` running an embedded server); their pids."""
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISE_A_SLEEP, str(log_dir), *options], cwd=REPO,
                                  stdout=subprocess.PIPE)
    assert supervisor.stdout is not None
    return supervisor, [int(pid) for pid in supervisor.stdout.readline().split() if pid != b"0"]


def test_children_and_the_server_of_a_supervisor_killed_with_sigkill_stop_with_it(tmp_path):
    supervisor, children = supervised_sleeper(tmp_path, "--nats")
    assert len(children) == 2 and all(process_alive(pid) for pid in children)
    supervisor.kill()
    supervisor.wait()
    # Before, they (in sessions of their own) ran on: a second `qraft up` then ran a second lander
    # and sources beside them, and left the server running when it stopped (it did not own it).
    assert wait_for(lambda: not any(process_alive(pid) for pid in children), timeout_s=10)


def test_a_second_supervisor_of_the_same_data_directory_is_refused_until_the_first_is_gone(tmp_path):
    first, _ = supervised_sleeper(tmp_path)
    second = ProcessSupervisor({"sleeper": [sys.executable, "-c", "pass"]}, {}, tmp_path)
    try:
        with pytest.raises(BlockingIOError, match=rf"held by a running `qraft up` \(pid {first.pid}\)"):
            second.start()
    finally:
        first.kill()
        first.wait()
    # The lock file the killed one left behind does not count.
    second.start()
    second.stop()
