"""Without CapyMOA (or its JVM) Qraft says so once and runs River alone."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from qraft_core.detectors import capymoa_engine, load_detectors, materialize_detections
from qraft_core.detectors.runner import active_specs
from qraft_core.detectors.synthetic import START, synthetic_features
from qraft_core.store.fake import MemoryStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def without_capymoa(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # A None entry in sys.modules makes `import capymoa` raise ImportError.
    monkeypatch.setitem(sys.modules, "capymoa", None)
    capymoa_engine.capymoa_available.cache_clear()
    yield
    capymoa_engine.capymoa_available.cache_clear()


def test_missing_capymoa_is_logged_once_and_river_runs(without_capymoa, caplog) -> None:  # type: ignore[no-untyped-def]
    config = load_detectors(REPO / "config")
    bars = synthetic_features(n_bars=120, seed=3)
    with caplog.at_level(logging.WARNING, logger="qraft_core.detectors.capymoa_engine"):
        assert capymoa_engine.capymoa_available() is False
        assert capymoa_engine.capymoa_available() is False
        assert {spec.engine for spec in active_specs(config)} == {"qraft", "river"}
        meta = materialize_detections(MemoryStore(), config, START, START + timedelta(minutes=20),
                                      timedelta(minutes=1), START, load_features=lambda *_: bars)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("CapyMOA is unavailable (")
    assert warnings[0].endswith("detectors run without CapyMOA")
    assert meta["engines"] == ["qraft", "river"]
    assert not any(name.endswith("_moa") for name in meta["signals_by_detector"])


def test_other_capymoa_version_warns(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    capymoa = pytest.importorskip("capymoa")
    monkeypatch.setattr(capymoa, "__version__", "9.9.9")
    capymoa_engine.capymoa_available.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="qraft_core.detectors.capymoa_engine"):
            assert capymoa_engine.capymoa_available() is True
    finally:
        capymoa_engine.capymoa_available.cache_clear()
    assert caplog.records[0].getMessage() == (
        "CapyMOA 9.9.9 is installed but Qraft is tested with 0.15.1; results may differ"
    )
