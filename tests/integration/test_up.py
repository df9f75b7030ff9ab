"""`qraft up` as a user runs it: embedded NATS, the lander and the sources, stopped by SIGTERM."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from qraft_core.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


def _trades(path: Path, first_id: int, count: int) -> None:
    # Trades of the last minute: a watcher is a live source, whose event times the lander bounds
    # by their ingest time.
    now_ms = int(time.time() * 1000) - 60_000
    with path.open("a") as handle:
        for trade_id in range(first_id, first_id + count):
            handle.write(json.dumps({
                "e": "trade", "E": now_ms + trade_id, "s": "BTCUSDT", "t": trade_id,
                "p": "42000.5", "q": "0.01", "T": now_ms + trade_id, "m": False, "M": True,
            }) + "\n")


def _wait_for(predicate, timeout_s: float = 120.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_up_runs_sources_and_lander_until_sigterm(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _trades(inbox / "trades-1.jsonl", 1, 50)
    (config / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "binance_spot", "type": "watcher", "endpoint": str(inbox), "parser": "binance_trade",
        "options": {"pattern": "*.jsonl", "interval_s": 0.2},
    }]}))
    env = {**os.environ, "QRAFT_DATA_DIR": str(tmp_path / "data"), "QRAFT_LANDER_METRICS_PORT": "0",
           "QRAFT_LANDER_BATCH_TIMEOUT_MS": "100"}
    env.pop("QRAFT_NATS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "qraft_cli", "--config-dir", str(config), "up", "--no-ui"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    os.environ["QRAFT_DATA_DIR"] = str(tmp_path / "data")
    try:
        rt = Runtime.load(config)

        def landed() -> int:
            return rt.store.count("raw_events").get("", 0)

        assert _wait_for(lambda: landed() == 50), (tmp_path / "data" / "logs").glob("*.log")
        # A file dropped while everything runs flows through too.
        _trades(inbox / "trades-2.jsonl", 51, 25)
        assert _wait_for(lambda: landed() == 75)
    finally:
        os.environ.pop("QRAFT_DATA_DIR", None)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    # Nothing is left running: the embedded NATS server was stopped with the rest.
    assert not (tmp_path / "data" / "nats" / "server.json").exists()
