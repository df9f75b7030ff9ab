"""What a user brings that used to fail deep inside a command: a header-less CSV, a file source's
position file that is damaged or cannot be written, partitions ending before they start, a data
directory that is a file, bars that do not divide the windows. Each is one line naming the file,
the key and what was expected."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qraft_cli import main
from qraft_cli.pipeline import dagster_workspace
from qraft_core.adapters.file import FileAdapter
from qraft_core.adapters.live import StateNotSaved
from qraft_core.adapters.registry import build_adapter
from qraft_core.analyze import (
    AnalyzeError,
    describe_plan,
    plan_analysis,
    profile_file,
    write_config,
)
from qraft_core.bus.fake import MemoryBus
from qraft_core.config import ConfigError, SourceConfig, load_sources
from qraft_core.redact import redact
from qraft_core.validation import validate_all
from qraft_dagster.execute import CODE_LOCATION

REPO = Path(__file__).resolve().parents[2]
ROWS = "".join(f"2015-01-01T00:{m:02d}:00Z,{m % 5 - 2}\n" for m in range(20))


def test_a_csv_without_a_header_line_is_left_out_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text(ROWS)
    with pytest.raises(AnalyzeError) as caught:
        profile_file(path, None, set())
    assert str(caught.value) == (f"{path}: the first line (2015-01-01T00:00:00Z,-2) holds values, not column names: "
                                 "add a header line naming the columns (e.g. timestamp,value)")
    path.write_text("timestamp,value\n" + ROWS)
    assert profile_file(path, None, set()).rows == 20


def file_source(tmp_path: Path) -> SourceConfig:
    data = tmp_path / "cpu.csv"
    data.write_text("timestamp,value\n" + ROWS)
    return SourceConfig(name="cpu", type="file", endpoint=str(data))


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "state file is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
                  "move it away to start over"),
    ("[1, 2]", "state file does not hold this source's state (holds list, not an object); move it away to start over"),
    ('{"/x/cpu.csv": "many"}', "state file does not hold this source's state (expected {file: count of records "
                               "published}); move it away to start over"),
    ('{"/x/cpu.csv": -3}', "state file does not hold this source's state (expected {file: count of records "
                           "published}); move it away to start over"),
])
def test_a_damaged_file_position_stops_the_source_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "cpu.position.json").write_text(content)
    with pytest.raises(ConfigError) as caught:
        build_adapter(file_source(tmp_path), tmp_path)
    assert str(caught.value) == f"{tmp_path / 'cpu.position.json'}: {problem}"


def test_a_file_position_that_cannot_be_saved_stops_the_replay(tmp_path: Path) -> None:
    adapter = build_adapter(file_source(tmp_path), tmp_path / "state")
    assert isinstance(adapter, FileAdapter)
    (tmp_path / "state").write_text("a file where the state folder belongs")
    bus = MemoryBus()
    with pytest.raises(StateNotSaved, match=r"cpu.position.json: state cannot be written"):
        asyncio.run(adapter.run(bus))
    # The batch was published before its position could not be saved: a restart publishes it
    # again (the lander stores each id once), never skips it.
    events, letters = bus.published()
    assert (len(events), letters) == (20, [])
    assert not (tmp_path / "state").is_dir()


def config_copy(tmp_path: Path, file: str, edit: dict) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(REPO / "config", folder)
    data = yaml.safe_load((folder / file).read_text()) or {}
    for key, value in edit.items():
        section, _, name = key.partition(".")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    (folder / file).write_text(yaml.safe_dump(data))
    return folder


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("qraft.yaml", {"partitions.start": "2016-01-01T00:00:00Z", "partitions.end": "2015-01-01T00:00:00Z"},
     "qraft.yaml: partitions: Value error, end (2015-01-01T00:00:00+00:00) must be after start "
     "(2016-01-01T00:00:00+00:00)"),
    ("qraft.yaml", {"data_dir": "/etc/hostname"},
     "qraft.yaml: data_dir: Value error, expected a folder, /etc/hostname is a file (got '/etc/hostname')"),
    ("preprocessing.yaml", {"preprocessing.bar_seconds": 7},
     "preprocessing.yaml: preprocessing.bar_seconds: expected a size that divides the windows of "
     "partitions.interval_minutes (1 min = 60 s) and their start 2026-01-05T00:00:00+00:00 (got 7)"),
])
def test_settings_that_cannot_run_fail_validation_naming_file_and_key(tmp_path: Path, file: str, edit: dict,
                                                                      message: str) -> None:
    folder = config_copy(tmp_path, file, edit)
    with pytest.raises(ConfigError) as caught:
        validate_all(folder)
    assert str(caught.value) == f"{folder}/{message}"


@pytest.mark.parametrize("command", [["up", "--no-ui", "--no-sources"],
                                     ["replay", "--start", "2026-01-05T00:00:00Z", "--end", "2026-01-05T01:00:00Z",
                                      "--in-process"]])
def test_up_and_replay_refuse_a_bad_configuration_before_starting_anything(tmp_path: Path, command: list[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configuration's data_dir is relative: nothing lands in the project
    folder = config_copy(tmp_path, "detectors.yaml", {})
    (folder / "detectors.yaml").write_text("detectors:\n- {name: d, engine: qraft, algorithm: Nope, kind: anomaly}\n")
    result = CliRunner().invoke(main, ["--config-dir", str(folder), *command])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {folder}/detectors.yaml: detectors: Value error, d: unknown qraft "
                                    "algorithm 'Nope'")


def test_an_unwritable_path_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    folder = config_copy(tmp_path, "qraft.yaml", {"data_dir": str(blocker / "data")})
    result = CliRunner().invoke(main, ["--config-dir", str(folder), "stats"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.startswith(f"error: {blocker / 'data'}: Not a directory")


def test_up_serves_the_code_location_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert dagster_workspace(tmp_path / "home") == Path("workspace.yaml")
    assert yaml.safe_load((REPO / "workspace.yaml").read_text()) == CODE_LOCATION
    monkeypatch.chdir(tmp_path)
    written = dagster_workspace(tmp_path / "home")
    assert written == tmp_path / "home" / "workspace.yaml"
    assert yaml.safe_load(written.read_text()) == CODE_LOCATION


def test_nested_json_objects_are_read_as_dotted_fields(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    path.write_text("".join(
        f'{{"timestamp": "2015-01-01T00:{m:02d}:00Z", "metrics": {{"cpu": {m % 5 - 2}, "mem": {{"used": {m * m % 11}}}}}, '
        f'"tags": ["a"], "host": "h{1 + m % 2}"}}\n' for m in range(20)))
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.categorical, profile.ignored, profile.flatten) == (
        ["metrics.cpu", "metrics.mem.used"], ["host"], ["tags"], True)
    plan = plan_analysis([profile])
    write_config(plan, tmp_path / "config", tmp_path / "data", None)
    source = load_sources(tmp_path / "config").sources[0]
    assert source.options["flatten"] is True
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").run(bus, asyncio.Event()))
    events, letters = bus.published()
    assert letters == []
    assert events[3]["payload"] == {"timestamp": "2015-01-01T00:03:00Z", "metrics.cpu": 1, "metrics.mem.used": 9,
                                    "tags": ["a"], "host": "h2"}


def test_a_file_with_a_gap_of_years_plans_only_the_windows_holding_data(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    before = [f"2015-01-01T{h:02d}:{m:02d}:00Z,{m % 7}\n" for h in range(24) for m in range(0, 60, 5)]
    after = [f"2020-01-01T{h:02d}:{m:02d}:00Z,{m % 7}\n" for h in range(24) for m in range(0, 60, 5)]
    path.write_text("timestamp,value\n" + "".join(before + after))
    plan = plan_analysis([profile_file(path, None, set())])
    assert [(a.isoformat(), b.isoformat()) for a, b in plan.spans] == [
        ("2015-01-01T00:00:00+00:00", "2015-01-02T00:00:00+00:00"),
        ("2020-01-01T00:00:00+00:00", "2020-01-02T00:00:00+00:00")]
    # Two hours: the partition range (five years) holds at most 30,000 windows.
    assert (plan.interval_minutes, plan.windows, plan.runs) == (120, 24, 2)


def test_values_too_large_for_bar_statistics_are_counted_in_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text("timestamp,value,load\n" + "".join(
        f"2015-01-01T00:{m:02d}:00Z,{'1e300' if m % 4 == 0 else m},{m % 7}\n" for m in range(20)))
    profile = profile_file(path, None, set())
    assert profile.oversize == {"value": 5}
    assert describe_plan(plan_analysis([profile]))[0].endswith(
        "one every 1min (5 value(s) of value infinite or beyond 1e+150 in size left out of the bar statistics); "
        "bars of 1min; fields value, load")


def test_the_working_folder_is_not_masked_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # PWD ends like a password variable; masking it hid the folder of every file a message named.
    monkeypatch.setenv("PWD", "/home/ana/data")
    monkeypatch.setenv("OLDPWD", "/home/ana")
    monkeypatch.setenv("DB_PWD", "hunter22")
    assert redact("/home/ana/data/cpu.csv: cannot connect with hunter22") == (
        "/home/ana/data/cpu.csv: cannot connect with ***")


def test_repeated_and_empty_column_names_each_keep_their_values(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("timestamp,value,value,\n" + "".join(f"2015-01-01T00:{m:02d}:00Z,{m},{-m},x\n" for m in range(20)))
    profile = profile_file(path, None, set())
    assert (profile.numeric, profile.categorical) == (["value", "value_2"], ["column_4"])
    bus = MemoryBus()
    asyncio.run(build_adapter(SourceConfig(name="dup", type="file", endpoint=str(path)), tmp_path).run(bus))
    events, letters = bus.published()
    assert letters == []
    assert events[3]["payload"] == {"timestamp": "2015-01-01T00:03:00Z", "value": "3", "value_2": "-3",
                                    "column_4": "x"}


def test_the_folder_watcher_numbers_a_repeated_column_name_too(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("ts,value,value\n1767571200,1,-1\n")
    source = SourceConfig(name="drop", type="watcher", endpoint=str(folder), options={"pattern": "*.csv", "time_field": "ts"})
    bus = MemoryBus()
    asyncio.run(build_adapter(source, tmp_path / "state").scan(bus))
    events, letters = bus.published()
    assert letters == []
    assert [e["payload"] for e in events] == [{"ts": "1767571200", "value": "1", "value_2": "-1"}]
