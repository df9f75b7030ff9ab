"""`config/detectors.yaml`: the bundled file loads; mistakes name file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qraft_core.config import ConfigError
from qraft_core.detectors.config import load_detectors

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "name": "vol_adwin",
    "engine": "river",
    "algorithm": "ADWIN",
    "kind": "concept_drift",
    "features": ["realized_vol"],
    "streams": ["binance_spot:*"],
}


def write(tmp_path: Path, data: object) -> Path:
    (tmp_path / "detectors.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_bundled_config_loads() -> None:
    config = load_detectors(REPO / "config")
    engines = {spec.engine for spec in config.enabled}
    kinds = {spec.kind.value for spec in config.enabled}
    assert engines == {"river", "capymoa", "qraft"}
    assert kinds == {"concept_drift", "anomaly", "cluster_change", "freq_pattern"}
    assert [s.name for s in config.for_stream("news")] == ["news_itemsets"]


def test_config_hash_follows_what_shapes_state() -> None:
    config = load_detectors(REPO / "config")
    spec = config.detectors[0]
    assert spec.config_hash == spec.model_copy(update={"enabled": False}).config_hash
    assert spec.config_hash != spec.model_copy(update={"seed": spec.seed + 1}).config_hash


@pytest.mark.parametrize(
    ("detector", "message"),
    [
        ({**GOOD, "treshold": 1}, "detectors[0].treshold: an unknown key (check the spelling)"),
        ({**GOOD, "engine": "flink"}, "detectors[0].engine: Input should be 'river', 'capymoa' or 'qraft'"),
        ({**GOOD, "kind": "trend"}, "detectors[0].kind: Input should be 'concept_drift'"),
        ({**GOOD, "algorithm": "DDM"}, "vol_adwin: unknown river algorithm 'DDM' (known: ADWIN, DBSTREAM"),
        ({**GOOD, "kind": "anomaly"}, "vol_adwin: ADWIN finds concept_drift, not anomaly"),
        ({**GOOD, "params": {"alpha": 1}}, "vol_adwin: params: RiverADWIN does not accept alpha"),
        ({**GOOD, "features": []}, "vol_adwin: needs at least one feature"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path: Path, detector: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_detectors(write(tmp_path, {"detectors": [detector]}))
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'detectors.yaml'}: ")
    assert message in text


def test_duplicate_names_and_nothing_enabled(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="detector name 'vol_adwin' appears twice"):
        load_detectors(write(tmp_path, {"detectors": [GOOD, GOOD]}))
    with pytest.raises(ConfigError, match="detectors: expected at least one enabled detector"):
        load_detectors(write(tmp_path, {"detectors": [{**GOOD, "enabled": False}]}))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="detectors.yaml: file not found"):
        load_detectors(tmp_path)
