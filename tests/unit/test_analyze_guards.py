"""`qraft analyze` refuses to run beside another on the same folder, says when a run failed, and prints
names from the data escaped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_cli.analyze import OUTPUT_FOLDER, _exit_if_failed
from qraft_core.analyze import AnalyzeError
from qraft_core.process_lock import hold_lock


def test_a_second_analyze_of_files_in_the_same_folder_is_refused_at_once(tmp_path: Path) -> None:
    # Both write the configuration next to the files and run from it: before, each ran the other's
    # settings (a data directory wiped under the other run, findings lost, exit 0 with []).
    series = tmp_path / "p.csv"
    series.write_text("timestamp,value\n" + "".join(f"2020-01-01T00:{i:02d}:00Z,{i % 7}\n" for i in range(60)))
    held = hold_lock(tmp_path / OUTPUT_FOLDER / "analyze.lock")
    try:
        result = CliRunner().invoke(main, ["analyze", str(series), "--data-dir", str(tmp_path / "d2"), "--json"])
    finally:
        os.close(held)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {tmp_path / OUTPUT_FOLDER}: another `qraft analyze` of files in this "
                                     f"folder is running (pid {os.getpid()}); wait for it to end")
    assert not (tmp_path / "d2").exists()


def test_a_failed_run_is_exit_1_with_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    _exit_if_failed({"succeeded": 3, "failed": 0})
    with pytest.raises(SystemExit) as exited:
        _exit_if_failed({"succeeded": 2, "failed": 1})
    assert exited.value.code == 1
    assert capsys.readouterr().err == ("error: 1 pipeline run(s) failed, the later windows were not analysed; "
                                       "see the Dagster UI for the run's logs\n")


def test_the_plan_prints_field_names_with_their_control_characters_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = tmp_path / "m.jsonl"
    series.write_text("".join(
        json.dumps({"ts": f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00Z", "cpu\x1b[2J": i % 7}) + "\n" for i in range(120)
    ))

    def stop_after_the_plan(*_: object, **__: object) -> None:
        raise AnalyzeError("stopped after the plan")

    monkeypatch.setattr("qraft_cli.analyze.pipeline_services", stop_after_the_plan)
    result = CliRunner().invoke(main, ["analyze", str(series), "--data-dir", str(tmp_path / "d")])
    assert "\x1b" not in result.output
    assert r"fields cpu\x1b[2J" in result.output
