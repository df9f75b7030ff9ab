"""The demo: the bundled seeded data through the whole pipeline, scored against its planted truth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qraft_core.demo.generate import generate_demo
from qraft_core.evaluate import evaluate_store
from qraft_core.services.pipeline import (
    Echo,
    PipelineService,
    fresh_data_dir,
    reset_consumer,
    table_counts,
    top_cards,
)

DEMO_DIR = Path("data/demo")


def ensure_demo_data(directory: Path, echo: Echo) -> None:
    """Generate the seeded demo files unless they are already there."""
    if not (directory / "trades.jsonl").exists() or not (directory / "ground_truth.json").exists():
        echo(f"generating demo data in {directory}/ …")
        generate_demo(directory)


def run_demo(pipeline: PipelineService, keep: bool, echo: Echo, on_run: Callable[[str, bool], None],
             directory: Path = DEMO_DIR) -> dict[str, Any]:
    """The demo data through the pipeline (from an empty data directory unless `keep`); its summary."""
    started = time.monotonic()
    rt = pipeline.rt
    if not keep:
        fresh_data_dir(rt)
        if rt.config.nats.url or pipeline.bus is not None:
            # An external or injected stream outlives the data directory and drops republished ids:
            # land it afresh.
            asyncio.run(reset_consumer(rt, pipeline.bus))
    ensure_demo_data(directory, echo)
    return {
        **pipeline.run_file_sources(echo, on_run),
        **table_counts(rt),
        "evaluation": evaluate_store(rt.store, directory / "ground_truth.json"),
        "cards": top_cards(rt),
        "seconds": round(time.monotonic() - started, 1),
    }
