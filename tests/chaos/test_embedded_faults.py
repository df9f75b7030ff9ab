"""`qraft up` with the embedded server: the adapter, the nats-server and the lander killed mid-run.

Guarantees: `qraft up` restarts a killed adapter (which resumes from its saved
offset) and a killed lander, and revives a killed embedded nats-server on its
port (the stream survives on disk, clients reconnect, publishes retry); every
event lands, no id twice (counted without FINAL); after
SIGTERM no process is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from qraft_core.bus.embedded import process_alive
from qraft_core.runtime import Runtime
from tests.chaos.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
FIRST_MS = 1767571200000  # 2026-01-05T00:00:00Z
STEP_MS = 50


def write_trades(path: Path, count: int) -> None:
    with path.open("w") as handle:
        for i in range(count):
            handle.write(json.dumps({"e": "trade", "E": FIRST_MS + i * STEP_MS, "s": "BTCUSDT", "t": i,
                                     "p": f"{42000 + (i % 97) / 10:.1f}", "q": "0.01",
                                     "T": FIRST_MS + i * STEP_MS, "m": i % 3 == 0, "M": True}) + "\n")


def children(pid: int) -> dict[str, int]:
    """The lander and sources processes `qraft up` runs, by role."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found["lander" if b"land" in command else "sources"] = int(entry.name)
    return found


def test_killing_the_adapter_the_embedded_server_and_the_lander_loses_and_doubles_nothing(
    tmp_path, monkeypatch, chaos_events, chaos_rng
):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    trades = tmp_path / "trades.jsonl"
    write_trades(trades, chaos_events)
    # Paced so the run lasts about 12 s (reduced) and the kills land inside it.
    speed = chaos_events * STEP_MS / 1000 / max(12.0, chaos_events / 3000)
    (config / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "binance_spot", "type": "file", "endpoint": str(trades), "parser": "binance_trade",
        "options": {"speed": speed, "batch_size": 500},
    }]}))
    data = tmp_path / "data"
    monkeypatch.setenv("QRAFT_DATA_DIR", str(data))
    monkeypatch.delenv("QRAFT_NATS_URL", raising=False)
    env = {**os.environ, "QRAFT_LANDER_METRICS_PORT": "0", "QRAFT_LANDER_BATCH_TIMEOUT_MS": "100"}
    up = subprocess.Popen([sys.executable, "-m", "qraft_cli", "--config-dir", str(config), "up", "--no-ui"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    rt = Runtime.load(config)
    server_file = data / "nats" / "server.json"
    kills = sorted(zip((chaos_rng.uniform(0.1, 0.8) for _ in range(3)),
                       chaos_rng.sample(["sources", "nats-server", "lander"], 3), strict=True))
    killed_pids = []

    def landed() -> int:
        return int(rt.store.count("raw_events").get("", 0))

    try:
        assert wait_for(lambda: server_file.exists() and len(children(up.pid)) == 2, timeout_s=60)
        for fraction, role in kills:
            assert wait_for(lambda f=fraction: landed() >= f * chaos_events, timeout_s=300), (role, landed())
            pid = json.loads(server_file.read_text())["pid"] if role == "nats-server" else children(up.pid)[role]
            os.kill(pid, signal.SIGKILL)
            killed_pids.append(pid)
            # Restarted (the server revived on its port) before the next kill.
            assert wait_for(lambda r=role, p=pid: (json.loads(server_file.read_text())["pid"] if r == "nats-server"
                                                   else children(up.pid).get(r, p)) != p, timeout_s=120), role
        assert wait_for(lambda: landed() >= chaos_events, timeout_s=300), landed()
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=120)[0].decode()
    assert up.returncode == 0, output
    assert "the embedded nats-server had died; restarted it" in output
    assert not server_file.exists()
    assert not any(process_alive(pid) for pid in killed_pids)
    with rt.store._client_in_session() as client:
        rows, distinct = client.query("SELECT count(), uniqExact(event_id) FROM raw_events").result_rows[0]
    # Nothing lost, no id twice, counted without FINAL: a batch the lander inserted but was killed
    # before acknowledging comes back, and its events are found stored as they are.
    assert (rows, distinct, rt.store.count("raw_events")[""]) == (chaos_events,) * 3, kills
