"""`qraft patterns` and `qraft replay` given arguments they cannot serve: one clear refusal (exit 2),
JSON that parses, and no silent truncation."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.bootstrap import bootstrap
from qraft_core.events import iso
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows
from qraft_core.store.fake import MemoryStore

PATTERNS = example_patterns()
CONFIG = str(Path(__file__).resolve().parents[2] / "config")
DAY = ["--since", "2026-01-05T00:00:00Z", "--until", "2026-01-06T00:00:00Z"]


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryStore:
    """The repository's configuration over an in-memory store holding the four example patterns."""
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    store = MemoryStore()
    store.insert("pattern_events", pattern_rows(PATTERNS))

    def services(ctx: Any, runs_pipeline: bool = False, ephemeral: bool = False) -> Any:
        return bootstrap(ctx.obj["config_dir"], store=store)

    monkeypatch.setattr("qraft_cli.patterns.services", services)
    monkeypatch.setattr("qraft_cli.replay.services", services)
    return store


def test_a_full_page_names_the_cursor_of_the_next_and_the_pages_add_up(stored: MemoryStore) -> None:
    first = CliRunner().invoke(main, ["patterns", "list", *DAY, "--limit", "3", "--json"])
    assert first.exit_code == 0, first.output
    listed = json.loads(first.stdout)  # still a list, as scripts read it
    assert [p["pattern_id"] for p in listed] == [p.pattern_id for p in PATTERNS[:3]]
    note = first.stderr.strip()
    assert note.startswith("more patterns than --limit 3: the next page is --cursor ")
    cursor = note.rsplit(" ", 1)[1]
    rest = CliRunner().invoke(main, ["patterns", "list", *DAY, "--limit", "3", "--cursor", cursor, "--json"])
    assert [p["pattern_id"] for p in json.loads(rest.stdout)] == [PATTERNS[3].pattern_id]
    assert rest.stderr == ""  # the last page: nothing more to name
    whole = CliRunner().invoke(main, ["patterns", "list", *DAY, "--limit", "4"])
    assert (len(whole.stdout.splitlines()), whole.stderr) == (4, "")


@pytest.mark.parametrize(("args", "said"), [
    (["--limit", "99999999999999999999"],
     "Error: Invalid value for '--limit': 99999999999999999999 is not in the range 1<=x<=1000."),
    (["--limit", "1001"], "Error: Invalid value for '--limit': 1001 is not in the range 1<=x<=1000."),
    (["--limit", "0"], "Error: Invalid value for '--limit': 0 is not in the range 1<=x<=1000."),
    (["--cursor", "garbage"], "Error: Invalid value for --cursor: cursor: not a cursor this API issued "
                              "(pass next_cursor back unchanged)"),
])
def test_a_limit_or_cursor_it_cannot_serve_is_refused(stored: MemoryStore, args: list[str], said: str) -> None:
    refused = CliRunner().invoke(main, ["patterns", "list", *DAY, *args])
    assert refused.exit_code == 2 and refused.stderr.splitlines()[-1] == said, refused.output
    assert refused.stdout == ""


def test_context_caps_its_limit_as_the_list_does(stored: MemoryStore) -> None:
    refused = CliRunner().invoke(main, ["patterns", "context", PATTERNS[0].pattern_id, "--limit", "5000"])
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == "Error: Invalid value for '--limit': 5000 is not in the range 1<=x<=1000."


@pytest.mark.parametrize("command", [["patterns", "show", "nosuch"], ["patterns", "annotations", "nosuch"],
                                     ["patterns", "context", "nosuch"],
                                     ["patterns", "annotate", "nosuch", "--label", "note"]])
def test_an_unknown_pattern_with_json_is_a_json_error(stored: MemoryStore, command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "no pattern with id 'nosuch'"}
    human = CliRunner().invoke(main, command)
    assert human.exit_code == 2 and human.stderr.splitlines()[-1] == (
        "Error: Invalid value for PATTERN_ID: no pattern with id 'nosuch'")


def test_export_to_dash_writes_stdout_not_a_file_named_dash(stored: MemoryStore, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a file named "-" would appear
    result = CliRunner().invoke(main, ["--config-dir", CONFIG, "patterns", "export", *DAY, "--format", "json", "--out", "-"])
    assert result.exit_code == 0, result.output
    assert [p["pattern_id"] for p in json.loads(result.stdout)] == [p.pattern_id for p in PATTERNS]
    assert result.stderr == "wrote 4 patterns to stdout\n"
    assert not (tmp_path / "-").exists()
    summary = CliRunner().invoke(main, ["--config-dir", CONFIG, "patterns", "export", *DAY, "--out", "-", "--json"])
    assert summary.stdout.splitlines()[0].startswith("pattern_id,")
    assert json.loads(summary.stderr) == {"end": "2026-01-06T00:00:00.000Z", "format": "csv", "out": "-",
                                          "patterns": 4, "start": "2026-01-05T00:00:00.000Z"}


def test_replay_refuses_a_source_the_configuration_does_not_name(stored: MemoryStore) -> None:
    refused = CliRunner().invoke(main, ["replay", "--start", "2026-01-05T00:00:00Z", "--end", "2026-01-05T01:00:00Z",
                                        "--source", "nosuch", "--source", "news", "--wait", "--json"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--source': unknown source(s) 'nosuch' (configured: binance_spot, news)")


def test_replay_status_of_an_unknown_replay_with_json_is_a_json_error(stored: MemoryStore) -> None:
    result = CliRunner().invoke(main, ["replay", "status", "nosuch", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "no replay nosuch"}
    human = CliRunner().invoke(main, ["replay", "status", "nosuch"])
    assert (human.exit_code, human.stderr) == (2, "error: no replay nosuch\n")


def test_demo_json_is_the_only_thing_on_stdout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "data"))
    # (Set here so that it is unset again after the test: `demo` sets it in its own process.)
    monkeypatch.setenv("QRAFT_PARTITIONS_ALLOWED_LATENESS_S", "0")
    monkeypatch.setattr("qraft_cli.pipeline.services", lambda ctx, runs_pipeline=False: bootstrap(
        ctx.obj["config_dir"], store=MemoryStore()))

    def run_demo(pipeline: Any, keep: bool, echo: Any, on_run: Any) -> dict[str, Any]:
        echo("1/3 publishing the file sources to NATS")
        return {"landed": 15}

    monkeypatch.setattr("qraft_cli.pipeline.run_demo", run_demo)
    monkeypatch.setattr("qraft_cli.pipeline._demo_text", lambda rt, summary: "")
    result = CliRunner().invoke(main, ["--config-dir", CONFIG, "demo", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"landed": 15}
    assert "1/3 publishing the file sources to NATS" in result.stderr


def test_names_from_the_data_reach_the_terminal_escaped_and_json_keeps_them_exact(stored: MemoryStore) -> None:
    stream = "web\x1b]0;pwned\x07\x1b[2J\nsplit"
    details = PATTERNS[1].details.model_copy(update={"new_state": "\x1b[31mRED", "metric_changes": {"\x1b[32mx": 1.0}})
    hostile = PATTERNS[1].model_copy(update={
        "pattern_id": "00000000-0000-5000-8000-000000000001", "source_streams": [stream], "details": details,
    })
    stored.insert("pattern_events", pattern_rows([hostile]))
    listed = CliRunner().invoke(main, ["patterns", "list", *DAY])
    shown = CliRunner().invoke(main, ["patterns", "show", hostile.pattern_id])
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
    row = next(line for line in listed.output.splitlines() if hostile.pattern_id in line)
    assert row.startswith(f"{iso(hostile.window_start)}  anomaly") and row.endswith(r"\x1b[31mRED")
    assert r"web\x1b]0;pwned\x07\x1b[2J\nsplit" in row
    assert r"on web\x1b\]0;pwned\x07\x1b\[2J\nsplit;" in shown.output
    as_json = CliRunner().invoke(main, ["patterns", "list", *DAY, "--json"])
    assert next(p for p in json.loads(as_json.output) if p["pattern_id"] == hostile.pattern_id)["source_streams"] == [
        stream
    ]


@pytest.mark.parametrize("args", [
    ["config", "schemas", "--out", ""],
    ["patterns", "export", "--out", ""],
    ["evaluate", "--truth", " "],
    ["replay", "--start", "2026-01-05T00:00:00Z", "--end", "2026-01-05T00:01:00Z", "--compare", ""],
    ["analyze", ""],
])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
        args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, `config schemas --out ""` wrote into the current folder and `patterns export --out ""` raised.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--config-dir", str(Path(CONFIG).resolve()), *args])
    assert result.exit_code == 2, result.output
    assert "an empty path names nothing (write . for the current folder)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_export_it_cannot_write_is_one_line_naming_the_file(stored: MemoryStore, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "nosuch" / "p.csv"
    refused = CliRunner().invoke(main, ["patterns", "export", *DAY, "--out", str(out), "--json"])
    assert (refused.exit_code, json.loads(refused.stdout)) == (2, {"error": f"{out}: No such file or directory"})

    def disk_full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write to /dev/full: no file name

    monkeypatch.setattr("qraft_core.services.patterns.PatternService.export", disk_full)
    out = tmp_path / "p.csv"
    refused = CliRunner().invoke(main, ["patterns", "export", *DAY, "--out", str(out)])
    assert (refused.exit_code, refused.stderr) == (2, f"error: {out}: No space left on device\n")
    refused = CliRunner().invoke(main, ["patterns", "export", *DAY, "--out", str(out), "--json"])
    assert (refused.exit_code, json.loads(refused.stdout)) == (2, {"error": f"{out}: No space left on device"})
