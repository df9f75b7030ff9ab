"""A detector's engine is what runs it; a finding is cross-validated only when two different engines
agree, and the pattern builder, goldens and cards count engines the same way."""

from datetime import UTC, datetime

from qraft_core.detectors import DETECTORS
from qraft_core.detectors.base import ENGINES
from qraft_core.events import AlgorithmInfo, PatternDetails, PatternEvent, PatternExplain
from qraft_core.golden import engine_agreement, golden_document

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_every_detector_is_registered_under_its_own_engine_and_named_after_it():
    assert DETECTORS.names()  # the built-in set is registered
    for key, cls in DETECTORS.items():
        engine, _, _ = key.partition("/")
        assert cls.engine == engine and engine in ENGINES, key
        assert cls("d", "s", ["x"]).algorithm.startswith(engine + "."), key


def finding(engines: list[str], *names: str) -> PatternEvent:
    algorithms = [AlgorithmInfo(name=name, version="1") for name in names]
    return PatternEvent(
        pattern_id="p", type="concept_drift", timestamp=T0, window_start=T0, source_streams=["s"],
        details=PatternDetails.model_validate({"engines": engines}), explain=PatternExplain(),
        algorithm=algorithms[0], algorithms=algorithms, cross_validated=len(engines) > 1, confidence=0.9,
    )


def test_two_algorithms_of_one_engine_are_not_two_engines():
    same = finding(["river"], "river.ADWIN", "river.KSWIN")
    both = finding(["capymoa", "river"], "river.ADWIN", "capymoa.ADWIN")
    assert (same.engines, both.engines) == (["river"], ["capymoa", "river"])
    assert engine_agreement([same, both])["counts"] == {"both": 1, "river_only": 1, "capymoa_only": 0}
    assert golden_document([same], T0, T0)["engines"] == ["river"]


def test_the_recorded_engines_win_over_the_algorithm_names():
    # A plugin's algorithm name need not start with its engine; the builder records the engine.
    assert finding(["qraft"], "acme.Spike").engines == ["qraft"]
    assert finding([], "river.ADWIN", "capymoa.ADWIN").engines == ["capymoa", "river"]
