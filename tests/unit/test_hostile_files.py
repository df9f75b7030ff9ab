"""A configuration that validates but runs nothing: detectors naming streams or features no pipeline makes
are warned about (file, detector, name), by `qraft config validate` and before `qraft up` / `qraft replay`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.validation import config_warnings

REPO = Path(__file__).resolve().parents[2]


def with_detectors(tmp_path: Path, detectors: list[dict[str, object]]) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(REPO / "config", folder)
    (folder / "detectors.yaml").write_text(yaml.safe_dump({"detectors": detectors}))
    return folder


def drift(name: str, streams: list[str], features: list[str]) -> dict[str, object]:
    return {"name": name, "engine": "qraft", "algorithm": "CalibratedDrift", "kind": "concept_drift",
            "streams": streams, "features": features}


def test_unknown_streams_and_features_are_warned_about_when_it_can_be_decided(tmp_path: Path) -> None:
    folder = with_detectors(tmp_path, [
        # A typo in the source, a source with no pipeline; a key of a split source cannot be known up front.
        drift("typo", ["binanse_spot:*", "bitcoin", "binance_spot:ANYTHING"], ["realized_vol"]),
        # The market bars' columns are known (OHLCV, derived, normalized, joined); a glob that matches one is fine.
        drift("features", ["binance_spot:*"], ["realized_volatility", "*_z", "nothing_*"]),
        # The news bars hold keyword counts known only from the data: nothing can be decided there.
        drift("news", ["news"], ["not_yet_known"]),
        # A glob without a separator may reach any split source's keys.
        drift("keys", ["*USDT"], ["realized_vol"]),
    ])
    path = folder / "detectors.yaml"
    columns = ("buy_ratio, buy_volume, close, event_count, high, imbalance, log_return, log_return_z, low, mean_size, "
               "mean_size_z, news_headline_count, open, quote_volume, range_bps, realized_vol, realized_vol_z, "
               "trade_count, trade_count_z, volume, volume_z, vwap, vwap_gap_bps")
    assert config_warnings(folder) == [
        f"{path}: detectors[0] typo: streams: 'binanse_spot:*' names no stream of preprocessing.yaml "
        "(streams: news, binance_spot:<s>)",
        f"{path}: detectors[0] typo: streams: 'bitcoin' names no stream of preprocessing.yaml "
        "(streams: news, binance_spot:<s>)",
        f"{path}: detectors[1] features: features: 'realized_volatility' is not a column of its streams' bars "
        f"(columns: {columns})",
        f"{path}: detectors[1] features: features: 'nothing_*' matches no column of its streams' bars "
        f"(columns: {columns})",
    ]


def test_the_shipped_configuration_has_nothing_to_warn_about() -> None:
    assert config_warnings(REPO / "config") == []


def test_per_field_statistics_of_named_fields_are_known_columns(tmp_path: Path) -> None:
    folder = with_detectors(tmp_path, [drift("cpu", ["cpu"], ["value_mean", "value_p99", "load_*"])])
    (folder / "preprocessing.yaml").write_text(yaml.safe_dump({"preprocessing": {"bar_seconds": 10, "pipeline_by_source": [
        {"source": "cpu", "operators": [{"aggregate": {"fields": ["value"], "stats": ["mean", "max"]}}]}]}}))
    assert config_warnings(folder) == [
        f"{folder}/detectors.yaml: detectors[0] cpu: features: 'value_p99' is not a column of its streams' bars "
        "(columns: event_count, value_max, value_mean)",
        f"{folder}/detectors.yaml: detectors[0] cpu: features: 'load_*' matches no column of its streams' bars "
        "(columns: event_count, value_max, value_mean)",
    ]
    # Fields found in the data: their columns are not known before it comes.
    (folder / "preprocessing.yaml").write_text(yaml.safe_dump({"preprocessing": {"bar_seconds": 10, "pipeline_by_source": [
        {"source": "cpu", "operators": ["aggregate"]}]}}))
    assert config_warnings(folder) == []


@pytest.mark.parametrize("as_json", [False, True])
def test_config_validate_warns_on_stderr_and_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      as_json: bool) -> None:
    monkeypatch.delenv("QRAFT_CONFIG_DIR", raising=False)
    folder = with_detectors(tmp_path, [drift("typo", ["bitcoin"], ["realized_vol"])])
    result = CliRunner().invoke(main, ["--config-dir", str(folder), "config", "validate", *(["--json"] if as_json else [])])
    warning = (f"{folder}/detectors.yaml: detectors[0] typo: streams: 'bitcoin' names no stream of preprocessing.yaml "
               "(streams: news, binance_spot:<s>)")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"warning: {warning}\n"
    if as_json:
        assert json.loads(result.stdout)["warnings"] == [warning]
