"""Configuration: typos and wrong types are errors naming file, key and expectation."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.config import ConfigError, load_qraft_config, load_sources
from qraft_core.validation import validate_all

REPO = Path(__file__).resolve().parents[2]


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def config_error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


def test_the_bundled_configuration_is_valid():
    config = load_qraft_config(REPO / "config", environ={})
    assert config.partitions.interval == timedelta(minutes=1)
    assert config.lander.batch_size == 20_000
    names = [s.name for s in load_sources(REPO / "config").sources]
    assert names[:2] == ["binance_spot", "news"]


def test_a_missing_qraft_yaml_means_the_defaults_an_empty_one_is_an_error(tmp_path):
    assert load_qraft_config(tmp_path, environ={}).nats.stream == "QRAFT_RAW"
    assert load_qraft_config(tmp_path, environ={}).lander.max_payload_bytes == 256 * 1024
    write(tmp_path, "qraft.yaml", "# nothing yet\n")
    assert config_error(lambda: load_qraft_config(tmp_path, environ={})) == (
        f"{tmp_path / 'qraft.yaml'}: <top>: expected a mapping of keys, the file is empty "
        "(delete it to use the defaults)"
    )


def test_an_unknown_key_names_file_key_path_and_what_to_check(tmp_path):
    write(tmp_path, "qraft.yaml", "nats:\n  urll: nats://x:4222\n")
    assert config_error(lambda: load_qraft_config(tmp_path, environ={})) == (
        f"{tmp_path / 'qraft.yaml'}: "
        "nats.urll: an unknown key (check the spelling) (got 'nats://x:4222')"
    )


def test_a_wrong_type_names_the_key_the_expectation_and_the_value(tmp_path):
    write(tmp_path, "qraft.yaml", "partitions:\n  interval_minutes: often\nlander:\n  batch_size: 0\n")
    lines = config_error(lambda: load_qraft_config(tmp_path, environ={})).splitlines()
    prefix = f"{tmp_path / 'qraft.yaml'}: "
    assert lines == [
        prefix + "partitions.interval_minutes: Input should be a valid integer, "
        "unable to parse string as an integer (got 'often')",
        prefix + "lander.batch_size: Input should be greater than or equal to 1 (got 0)",
    ]


def test_yaml_that_is_not_a_mapping_or_not_yaml_is_named(tmp_path):
    write(tmp_path, "qraft.yaml", "- data_dir\n")
    assert config_error(lambda: load_qraft_config(tmp_path, environ={})) == (
        f"{tmp_path / 'qraft.yaml'}: <top>: expected a mapping of keys, got list"
    )
    write(tmp_path, "qraft.yaml", "nats: [\n")
    # One line, with where PyYAML stopped (its own message spans four lines and names no file).
    assert config_error(lambda: load_qraft_config(tmp_path, environ={})) == (
        f"{tmp_path / 'qraft.yaml'}: line 2, column 1: not valid YAML: expected the node content, but found "
        "'<stream end>' (while parsing a flow node at line 2, column 1)"
    )


def test_a_configuration_folder_that_is_missing_a_file_or_unreadable_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    assert config_error(lambda: load_qraft_config(missing, environ={})) == (
        f"{missing}: configuration folder not found (set --config-dir or QRAFT_CONFIG_DIR)")
    a_file = write(tmp_path, "qraft.yaml", "nats: {}\n") / "qraft.yaml"
    assert config_error(lambda: load_qraft_config(a_file, environ={})) == (
        f"{a_file}: expected a configuration folder, found a file")

    def denied(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("qraft_core.config.os.listdir", denied)
    assert config_error(lambda: load_qraft_config(tmp_path, environ={})) == (
        f"{tmp_path}: configuration folder cannot be read (Permission denied)")


def test_environment_overrides_win_over_the_file(tmp_path):
    write(
        tmp_path,
        "qraft.yaml",
        "nats:\n  url: nats://file:4222\n  stream: FROM_FILE\npartitions:\n  interval_minutes: 1\n",
    )
    environ = {
        "QRAFT_NATS_URL": "nats://127.0.0.1:4333",
        "QRAFT_PARTITIONS_INTERVAL_MINUTES": "5",
        "QRAFT_LANDER_METRICS_PORT": "0",
        "QRAFT_DATA_DIR": str(tmp_path / "data"),
        # Not configuration: ignored rather than rejected.
        "QRAFT_CONFIG_DIR": "/elsewhere",
        "QRAFT_API_KEY": "secret",
        "QRAFT_NO_SUCH_SETTING": "1",
    }
    config = load_qraft_config(tmp_path, environ=environ)
    assert config.nats.url == "nats://127.0.0.1:4333"
    assert config.nats.stream == "FROM_FILE"
    assert config.partitions.interval == timedelta(minutes=5)
    assert config.lander.metrics_port == 0
    assert config.data_dir == tmp_path / "data"


def test_environment_overrides_are_read_from_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QRAFT_NATS_URL", "nats://127.0.0.1:4999")
    monkeypatch.setenv("QRAFT_PARTITIONS_INTERVAL_MINUTES", "15")
    config = load_qraft_config(tmp_path)
    assert (config.nats.url, config.partitions.interval_minutes) == ("nats://127.0.0.1:4999", 15)


def test_a_bad_environment_override_is_an_error_naming_the_key(tmp_path):
    message = config_error(
        lambda: load_qraft_config(tmp_path, environ={"QRAFT_PARTITIONS_INTERVAL_MINUTES": "2000"})
    )
    assert message == (
        "$QRAFT_PARTITIONS_INTERVAL_MINUTES (environment): "
        "partitions.interval_minutes: Input should be less than or equal to 1440 (got 2000)"
    )
    # With a bad value in the file too, each line names where its value was set.
    write(tmp_path, "qraft.yaml", "lander:\n  batch_size: 0\n")
    lines = config_error(lambda: load_qraft_config(tmp_path, environ={"QRAFT_API_MAX_PAGE": "lots"})).splitlines()
    assert lines == [
        f"{tmp_path / 'qraft.yaml'}: lander.batch_size: Input should be greater than or equal to 1 (got 0)",
        "$QRAFT_API_MAX_PAGE (environment): api.max_page: Input should be a valid integer, unable to parse string "
        "as an integer (got 'lots')",
    ]


def test_a_bad_value_inside_a_mapping_from_the_environment_names_the_variable(tmp_path):
    message = config_error(lambda: load_qraft_config(
        tmp_path, environ={"QRAFT_STORE_RETENTION_DAYS": "{raw_events: lots}"}))
    assert message.startswith("$QRAFT_STORE_RETENTION_DAYS (environment): store.retention_days.raw_events: "
                              "Input should be a valid integer"), message


def test_a_text_setting_may_look_like_a_number_in_the_environment(tmp_path):
    config = load_qraft_config(tmp_path, environ={"QRAFT_MLFLOW_EXPERIMENT": "2026"})
    assert config.mlflow.experiment == "2026"


SOURCE = "sources:\n  - name: trades\n    type: {type}\n    endpoint: {endpoint}\n    parser: {parser}\n"


def test_an_unknown_source_type_is_named_with_the_known_ones(tmp_path):
    write(tmp_path, "sources.yaml", SOURCE.format(type="ftp", endpoint="x.csv", parser="generic"))
    message = config_error(lambda: load_sources(tmp_path))
    assert message.startswith(
        f"{tmp_path / 'sources.yaml'}: sources[0].type: unknown source type 'ftp' (known: "
    )
    assert "file" in message.split("known: ")[1]


def test_an_unknown_parser_and_bad_options_are_named(tmp_path):
    write(tmp_path, "sources.yaml", SOURCE.format(type="file", endpoint="x.csv", parser="xml"))
    assert config_error(lambda: load_sources(tmp_path)).startswith(
        f"{tmp_path / 'sources.yaml'}: sources[0].parser: unknown parser 'xml' (known: "
    )
    write(
        tmp_path,
        "sources.yaml",
        SOURCE.format(type="file", endpoint="x.csv", parser="generic")
        + "    options: {speed: -1, colour: red}\n",
    )
    assert config_error(lambda: load_sources(tmp_path)).splitlines() == [
        f"{tmp_path / 'sources.yaml'}: sources[0].options: speed: Input should be greater than or equal to 0 "
        "(got -1)",
        f"{tmp_path / 'sources.yaml'}: sources[0].options: colour: an unknown key (check the spelling) (got 'red')",
    ]


def test_duplicate_source_names_are_rejected(tmp_path):
    one = SOURCE.format(type="file", endpoint="x.csv", parser="generic")
    write(tmp_path, "sources.yaml", one + one.removeprefix("sources:\n"))
    assert config_error(lambda: load_sources(tmp_path)) == (
        f"{tmp_path / 'sources.yaml'}: sources: Value error, source name 'trades' appears twice"
    )


def test_a_missing_sources_file_is_named(tmp_path):
    assert config_error(lambda: load_sources(tmp_path)) == f"{tmp_path / 'sources.yaml'}: file not found"


def test_a_file_source_without_endpoint_is_a_config_error(tmp_path):
    write(tmp_path, "sources.yaml", "sources:\n  - name: trades\n    type: file\n")
    assert "sources[0].endpoint" in config_error(lambda: load_sources(tmp_path))


def bundled_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


ALL_FILES = ("qraft.yaml", "sources.yaml", "preprocessing.yaml", "detectors.yaml", "cards.yaml")


def test_validate_all_lists_the_files_checked(tmp_path):
    directory = bundled_copy(tmp_path)
    assert validate_all(directory) == [str(directory / name) for name in ALL_FILES]


def test_validate_all_checks_the_pipeline_files_too(tmp_path):
    directory = bundled_copy(tmp_path)
    text = (directory / "detectors.yaml").read_text().replace("algorithm: DBSTREAM", "algorithm: DBSTREAMM", 1)
    write(directory, "detectors.yaml", text)
    with pytest.raises(ConfigError, match=r"detectors\.yaml.*unknown river algorithm 'DBSTREAMM'"):
        validate_all(directory)


def test_config_validate_command_on_a_good_directory(tmp_path, monkeypatch):
    for name in ("QRAFT_NATS_URL", "QRAFT_DATA_DIR", "QRAFT_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    directory = bundled_copy(tmp_path)
    result = CliRunner().invoke(main, ["--config-dir", str(directory), "config", "validate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "checked": [str(directory / name) for name in ALL_FILES],
        "warnings": [],
    }


def test_config_validate_command_exits_2_naming_file_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("QRAFT_CONFIG_DIR", raising=False)
    directory = bundled_copy(tmp_path)
    text = (directory / "qraft.yaml").read_text().replace("batch_size: 20000", "batch_size: lots")
    write(directory, "qraft.yaml", text)
    result = CliRunner().invoke(main, ["--config-dir", str(directory), "config", "validate", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {directory / 'qraft.yaml'}: lander.batch_size: "
        "Input should be a valid integer, unable to parse string as an integer (got 'lots')\n"
    )


def test_config_validate_command_reports_a_bad_sources_file(tmp_path, monkeypatch):
    monkeypatch.delenv("QRAFT_CONFIG_DIR", raising=False)
    directory = bundled_copy(tmp_path)
    write(directory, "sources.yaml", SOURCE.format(type="ftp", endpoint="x", parser="generic"))
    result = CliRunner().invoke(main, ["--config-dir", str(directory), "config", "validate"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: {directory / 'sources.yaml'}: sources[0].type: unknown source type 'ftp'"
    )
