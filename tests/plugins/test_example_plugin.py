"""A plugin from this folder, loaded through `plugins:` in qraft.yaml, drives the whole chain:
its source type and parser → clean → its operator → its detector → a pattern measured with its
metric set → a card in its words. Runs in a fresh interpreter, as a user's process would
load the plugin (a loaded plugin stays registered for the life of a process)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
# Two hours of one reading a minute: 21.0 °C with a small seeded wobble, then 29.0 °C from minute 150.
READINGS = [21.0 + 0.1 * ((7 * i) % 5 - 2) for i in range(150)] + [29.0] * 30


def write_config(folder: Path) -> None:
    files: dict[str, Any] = {
        "qraft.yaml": {"data_dir": str(folder / "data"), "plugins": ["example_plugin"]},
        "sources.yaml": {"sources": [{"name": "lab", "type": "scripted", "parser": "reading",
                                      "options": {"readings": READINGS, "start": START.isoformat()}}]},
        "preprocessing.yaml": {"preprocessing": {"bar_seconds": 60, "pipeline_by_source": [
            {"source": "lab", "operators": [{"aggregate": {"fields": ["celsius"]}}, {"swing": {"field": "celsius"}}]},
        ]}},
        "detectors.yaml": {"detectors": [{"name": "lab_far", "engine": "qraft", "algorithm": "FarFromMean",
                                          "kind": "anomaly", "features": ["celsius_mean"],
                                          "params": {"warmup_bars": 30}}]},
    }
    for name, content in files.items():
        (folder / name).write_text(yaml.safe_dump(content))
    shutil.copy(REPO / "config" / "cards.yaml", folder / "cards.yaml")


def run_chain(folder: Path) -> dict[str, Any]:
    """The chain on the in-memory store and bus; returns what each step produced."""
    from qraft_core.adapters.registry import build_adapter
    from qraft_core.bus.fake import MemoryBus
    from qraft_core.clean import clean_windows
    from qraft_core.config import load_qraft_config, load_sources
    from qraft_core.detectors import load_detectors, materialize_detections
    from qraft_core.explain.materialize import explain_pattern
    from qraft_core.explain.templates import load_cards_config
    from qraft_core.features import load_features, materialize_features
    from qraft_core.lander import land_batch
    from qraft_core.operators.pipeline import load_preprocessing
    from qraft_core.patterns import load_pattern_events, materialize_patterns
    from qraft_core.store.fake import MemoryStore

    config = load_qraft_config(folder)  # imports the plugin
    [source] = load_sources(folder).sources  # its options checked by the plugin's source type
    bus, store = MemoryBus(), MemoryStore()
    asyncio.run(build_adapter(source, folder).run(bus, asyncio.Event()))
    messages = asyncio.run(bus.fetch(100, 0.01))
    landed = land_batch([(m.subject, m.data) for m in messages], now=START + 4 * HOUR)
    store.insert("raw_events", landed.raw_events)
    end = START + 3 * HOUR
    cleaned = clean_windows(store, START, end, HOUR, config.clean)
    preprocessing, detectors = load_preprocessing(folder), load_detectors(folder)
    materialize_features(store, preprocessing, START, end, HOUR)
    features = load_features(store, START, end)
    materialize_detections(store, detectors, START, end, HOUR, START)
    materialize_patterns(store, detectors, START, end, HOUR, preprocessing=preprocessing)
    patterns = load_pattern_events(store, START, end)
    card = explain_pattern(store, config, load_cards_config(folder), patterns[0], "en")
    return {
        "landed": landed.landed, "clean": cleaned.clean,
        "swing_columns": [c for c in features.columns if c.endswith("_swing")],
        "patterns": [(p.timestamp.isoformat(), p.algorithm.name, p.details.metric_changes) for p in patterns],
        "card": card.markdown,
    }


def test_a_plugin_from_the_test_folder_runs_end_to_end(tmp_path: Path) -> None:
    write_config(tmp_path)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["landed"], result["clean"]) == (180, 180)
    assert result["swing_columns"] == ["celsius_swing"]
    # The plugin's metric `temperature` beside the generic set's field-named `celsius`.
    assert result["patterns"] == [
        ["2026-01-05T02:30:00+00:00", "qraft.FarFromMean", {"temperature": 8.0, "celsius": 8.0}]
    ]
    assert "By how much:** celsius 21 → 29 (+8), room temperature (`temperature`) 21 → 29 (+8)" in result["card"]


if __name__ == "__main__":
    print(json.dumps(run_chain(Path(sys.argv[1])), default=str))
