"""Damaged configuration files: one line naming the file, the key and what was expected, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.config import ConfigError, load_qraft_config, load_sources
from qraft_core.detectors.base import DETECTORS, DetectorParamsError, detector_key
from qraft_core.detectors.config import load_detectors
from qraft_core.validation import validate_all

REPO = Path(__file__).resolve().parents[2]


def bundled(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


def damage(directory: Path, name: str, content: bytes | None) -> Path:
    path = directory / name
    path.unlink(missing_ok=True)
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


BOMB = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8)
)


@pytest.mark.parametrize(("content", "expected"), [
    (b"\x00\x01\x02\xff binary", "<top>: expected YAML text, found a binary file"),
    ("nats:\n  url: caf\u00e9\n".encode("latin-1"),
     "<top>: expected UTF-8 text, found byte 0xe9 at offset 16 (save the file as UTF-8)"),
    (b"", "<top>: expected a mapping of keys, the file is empty (delete it to use the defaults)"),
    (b"a: " + b"[" * 1200 + b"]" * 1200, "<top>: expected at most 32 levels of nesting"),
    (b"a:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 40)) + b"  " * 40 + b"v: 1\n",
     "a.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k.k: expected at most 32 levels of nesting"),
    (BOMB, "<top>: expected at most 100000 values, the file expands to more (YAML anchors and aliases?)"),
    (b"- just\n- a list\n", "<top>: expected a mapping of keys, got list"),
    (b"nats: [unclosed\n", "line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence at line 1, column 7)"),
])
def test_a_damaged_file_is_a_config_error_naming_it(tmp_path, content, expected):
    directory = bundled(tmp_path)
    path = damage(directory, "sources.yaml", content)
    with pytest.raises(ConfigError) as caught:
        validate_all(directory)
    assert str(caught.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("name", ["qraft.yaml", "sources.yaml", "detectors.yaml", "preprocessing.yaml",
                                  "cards.yaml"])
def test_every_configuration_file_is_read_the_same_careful_way(tmp_path, name):
    directory = bundled(tmp_path)
    path = damage(directory, name, "a: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        validate_all(directory)
    assert str(caught.value) == (
        f"{path}: <top>: expected UTF-8 text, found byte 0xe9 at offset 6 (save the file as UTF-8)")


def test_a_folder_in_place_of_a_file_is_named(tmp_path):
    directory = bundled(tmp_path)
    for name in ("qraft.yaml", "sources.yaml", "detectors.yaml"):
        path = damage(directory, name, None)
        with pytest.raises(ConfigError) as caught:
            validate_all(directory)
        assert str(caught.value) == f"{path}: <top>: expected a YAML file, found a folder"
        path.rmdir()
        shutil.copy(REPO / "config" / name, path)


def test_a_shared_alias_within_the_bounds_is_fine(tmp_path):
    directory = bundled(tmp_path)
    # A section the bundled file does not have: a key written twice is an error of its own.
    text = (directory / "qraft.yaml").read_text() + "\napi: &a {max_page: 100}\n"
    (directory / "qraft.yaml").write_text(text)
    assert load_qraft_config(directory, environ={}).api.max_page == 100
    assert load_sources(directory).sources


def detector_params(tmp_path: Path, params: dict) -> Path:
    directory = bundled(tmp_path)
    path = directory / "detectors.yaml"
    data = yaml.safe_load(path.read_text())
    # A River ADWIN of its own, so the expected defaults do not depend on the bundled set.
    data["detectors"][0] = {"name": "vol_adwin", "engine": "river", "algorithm": "ADWIN",
                            "kind": "concept_drift", "features": ["value_mean"], "params": params}
    path.write_text(yaml.safe_dump(data))
    return directory


@pytest.mark.parametrize(("params", "expected"), [
    ({"delta": "high"}, "params.delta: expected a number like the default 0.002 (got 'high')"),
    ({"grace_period": 2.5}, "params.grace_period: expected a whole number like the default 10 (got 2.5)"),
    ({"grace_period": True}, "params.grace_period: expected a whole number like the default 10 (got True)"),
    ({"delta": float("nan")}, "params.delta: expected a number like the default 0.002 (got nan)"),
    ({"transform": 3}, "params.transform: expected a str like the default 'none' (got 3)"),
    # Values of the right type that would only fail inside a run, or mean nothing.
    ({"delta": 5.0}, "params.delta: expected a number > 0 and < 1 (got 5.0)"),
    ({"grace_period": 0}, "params.grace_period: expected a number >= 1 (got 0)"),
    ({"context_bars": -3}, "params.context_bars: expected a number >= 1 (got -3)"),
    ({"transform": "sqrt"}, "params.transform: expected one of none, log (got 'sqrt')"),
])
def test_detector_params_are_checked_at_validation(tmp_path, params, expected):
    directory = detector_params(tmp_path, params)
    with pytest.raises(ConfigError) as caught:
        load_detectors(directory)
    assert str(caught.value) == (
        f"{directory / 'detectors.yaml'}: detectors: Value error, vol_adwin: {expected}"
    )


@pytest.mark.parametrize(("engine", "algorithm", "params", "expected"), [
    ("river", "KSWIN", {"stat_size": 100}, "params.stat_size: expected fewer than window_size (100) (got 100)"),
    ("capymoa", "ADWIN", {"keep_history": 700},
     "params.keep_history: expected fewer than max_history (600) (got 700)"),
    ("qraft", "LossyCountingItemsets", {"epsilon": 0.0}, "params.epsilon: expected a number > 0 and < 1 (got 0.0)"),
    ("river", "PageHinkley", {"mode": "sideways"}, "params.mode: expected one of up, down, both (got 'sideways')"),
])
def test_detector_params_that_only_make_sense_together_are_checked(engine, algorithm, params, expected):
    with pytest.raises(DetectorParamsError) as caught:
        DETECTORS[detector_key(engine, algorithm)].check_params(params)
    assert str(caught.value) == expected


def test_every_numeric_parameter_of_a_packaged_detector_has_limits():
    unlimited = [
        f"{key}.{name}" for key in DETECTORS.names() for name, default in DETECTORS[key].defaults.items()
        if isinstance(default, (int, float)) and not isinstance(default, bool) and name not in DETECTORS[key].limits
    ]
    assert unlimited == []


def test_config_validate_exits_2_with_one_line_for_damage(tmp_path, monkeypatch):
    directory = detector_params(tmp_path, {"delta": "high"})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--config-dir", str(directory), "config", "validate"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "vol_adwin: params.delta: expected a number" in result.output
    damage(directory, "sources.yaml", b"\xff\xfe\x00")
    result = CliRunner().invoke(main, ["--config-dir", str(directory), "config", "validate"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {directory / 'sources.yaml'}: <top>: expected YAML text, found a binary file")


def test_a_wrong_config_dir_stops_every_command_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["patterns", "list"], ["config", "validate"], ["replay", "status"]):
        result = CliRunner().invoke(main, ["--config-dir", str(tmp_path / "confg"), *args])
        assert (result.exit_code, result.output.strip()) == (
            2, f"error: {tmp_path / 'confg'}: configuration folder not found (set --config-dir or QRAFT_CONFIG_DIR)")


@pytest.mark.parametrize("command", [["stats", "--json"], ["patterns", "list", "--json"], ["evaluate"]])
def test_a_damaged_file_stops_commands_that_do_not_read_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           command: list[str]) -> None:
    config = bundled(tmp_path)
    damage(config, "detectors.yaml", b"detectors: \xff\n")
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["--config-dir", str(config), *command])
    assert (result.exit_code, result.stderr) == (2, f"error: {config}/detectors.yaml: <top>: expected UTF-8 text, "
                                                    "found byte 0xff at offset 11 (save the file as UTF-8)\n")


def test_the_check_every_command_makes_adds_no_warning_of_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # A database source whose timestamp cursor has no tiebreak is `config validate`'s to warn about; before,
    # the check at the start of every command printed it on each command's stderr.
    from qraft_core.adapters import database

    monkeypatch.setattr(database, "_warned_time_cursor", set())
    config = bundled(tmp_path)
    (config / "sources.yaml").write_text(
        "sources:\n  - name: orders\n    type: database\n    endpoint: sqlite:///orders.db\n"
        "    options: {table: orders, cursor_column: updated_at, time_field: updated_at}\n")
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["--config-dir", str(config), "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert [r.getMessage() for r in caplog.records if "looks like a timestamp" in r.getMessage()] == []
    validate = CliRunner().invoke(main, ["--config-dir", str(config), "config", "validate"])
    assert validate.exit_code == 0
    assert [r.levelname for r in caplog.records if "looks like a timestamp" in r.getMessage()] == ["WARNING"]
