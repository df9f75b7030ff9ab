"""The fault drills: processes killed at seeded random points of a run; nothing lost, nothing doubled.

`make test` runs them reduced (QRAFT_CHAOS_EVENTS unset: a few tens of thousands of
events); `make chaos` runs them in full (QRAFT_CHAOS_EVENTS=200000). QRAFT_CHAOS_SEED
picks the kill points.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest

REDUCED_EVENTS = 20_000


@pytest.fixture
def chaos_events() -> int:
    return int(os.environ.get("QRAFT_CHAOS_EVENTS", REDUCED_EVENTS))


@pytest.fixture
def chaos_rng() -> random.Random:
    return random.Random(int(os.environ.get("QRAFT_CHAOS_SEED", "13")))


def wait_for(predicate: Callable[[], bool], timeout_s: float = 180.0, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return False
