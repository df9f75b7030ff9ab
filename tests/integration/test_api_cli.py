"""`qraft patterns` and `qraft api` through the real CLI against embedded ClickHouse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qraft_cli import main
from qraft_core.plugins.markets.examples import example_clean_events, example_patterns, pattern_rows
from qraft_core.runtime import Runtime

PATTERNS = example_patterns()
DRIFT, ANOMALY, CLUSTER, FREQ = PATTERNS
DAY = ["--since", "2026-01-05T00:00:00Z", "--until", "2026-01-06T00:00:00Z"]


@pytest.fixture
def runner(config_dir: Path) -> CliRunner:
    store = Runtime.load(config_dir).store
    with store.session():
        store.insert("clean_events", example_clean_events())
        store.insert("pattern_events", pattern_rows(PATTERNS))
    return CliRunner()


def run(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_filters_and_prints_json(runner: CliRunner) -> None:
    listed = json.loads(run(runner, "patterns", "list", *DAY, "--json"))
    assert [p["pattern_id"] for p in listed] == [p.pattern_id for p in PATTERNS]
    news = json.loads(run(runner, "patterns", "list", *DAY, "--source", "news", "--json"))
    assert [p["type"] for p in news] == ["cluster_change", "freq_pattern"]
    human = run(runner, "patterns", "list", *DAY, "--type", "anomaly")
    assert human.strip() == (
        f"2026-01-05T10:41:00.000Z  anomaly        0.93  binance_spot         {ANOMALY.pattern_id}  "
        "normal trading → price spike"
    )


def test_show_prints_the_card_in_either_language(runner: CliRunner) -> None:
    assert run(runner, "patterns", "show", DRIFT.pattern_id).startswith(
        "### Concept drift · 2026-01-05 10:32:15 UTC"
    )
    assert run(runner, "patterns", "show", DRIFT.pattern_id, "--lang", "zh").startswith("### 概念漂移")
    card = json.loads(run(runner, "patterns", "show", FREQ.pattern_id, "--json"))
    assert card["replay_command"].endswith("--source news") and card["mode"] == "human"


def test_annotate_then_export(runner: CliRunner, tmp_path: Path) -> None:
    run(runner, "patterns", "annotate", ANOMALY.pattern_id, "--label", "false_alarm", "--note", "maintenance")
    assert "误报，cli" in run(runner, "patterns", "show", ANOMALY.pattern_id, "--lang", "zh")
    out = tmp_path / "patterns.csv"
    summary = json.loads(
        run(runner, "patterns", "export", *DAY, "--format", "csv", "--out", str(out), "--json")
    )
    assert summary["patterns"] == 4
    with out.open() as handle:
        assert [row["type"] for row in csv.DictReader(handle)] == [p.type.value for p in PATTERNS]
    out_json = tmp_path / "drift.json"
    run(
        runner,
        "patterns",
        "export",
        *DAY,
        "--type",
        "concept_drift",
        "--format",
        "json",
        "--out",
        str(out_json),
    )
    assert [p["pattern_id"] for p in json.loads(out_json.read_text())] == [DRIFT.pattern_id]


def test_bad_input_is_a_usage_error(runner: CliRunner) -> None:
    bad_time = runner.invoke(main, ["patterns", "list", "--since", "noon"])
    assert bad_time.exit_code == 2 and "--since: 'noon' is not an ISO 8601 time" in bad_time.output
    bad_replay = runner.invoke(main, ["replay", "--start", "noon", "--end", "2026-01-05T01:00:00Z"])
    assert bad_replay.exit_code == 2 and (
        "Error: --start: 'noon' is not an ISO 8601 time (e.g. 2026-01-05T10:00:00Z)" in bad_replay.output)
    unknown = runner.invoke(main, ["patterns", "show", "nope"])
    assert unknown.exit_code == 2 and "no pattern with id 'nope'" in unknown.output
    # Before, pydantic's whole validation dump, the note included, was printed.
    too_long = runner.invoke(main, ["patterns", "annotate", DRIFT.pattern_id, "--label", "note", "--note", "x" * 4001])
    assert too_long.exit_code == 2
    assert too_long.output.splitlines()[-1] == "Error: note: String should have at most 4000 characters"
    assert "OpenAPI docs at /docs" in run(runner, "api", "--help")
    nowhere = runner.invoke(main, ["patterns", "export", *DAY, "--out", "/nonexistent/folder/p.csv"])
    assert (nowhere.exit_code, nowhere.output) == (2, "error: /nonexistent/folder/p.csv: No such file or directory\n")


def test_export_without_a_range_holds_every_pattern_whatever_the_span(runner: CliRunner, tmp_path: Path) -> None:
    from datetime import timedelta

    old = DRIFT.model_copy(update={"pattern_id": "old-drift", "timestamp": DRIFT.timestamp - timedelta(days=4000),
                                   "window_start": DRIFT.window_start - timedelta(days=4000)})
    store = Runtime.load().store
    with store.session():
        store.insert("pattern_events", pattern_rows([old]))
    out = tmp_path / "all.json"
    summary = json.loads(run(runner, "patterns", "export", "--format", "json", "--out", str(out), "--json"))
    assert summary["patterns"] == 5 and summary["start"].startswith("2015-")
    assert [p["pattern_id"] for p in json.loads(out.read_text())] == ["old-drift"] + [p.pattern_id for p in PATTERNS]
    # Listings keep their api.max_range_days window (the newest 31 days here).
    assert len(json.loads(run(runner, "patterns", "list", "--json"))) == 4


def test_context_annotations_and_verdict_stats_of_a_pattern(runner: CliRunner) -> None:
    run(runner, "patterns", "annotate", DRIFT.pattern_id, "--label", "confirmed", "--note", "real move")
    listed = json.loads(run(runner, "patterns", "annotations", DRIFT.pattern_id, "--json"))
    assert [(a["label"], a["note"], a["author"]) for a in listed] == [("confirmed", "real move", "cli")]
    # 22 trades in the drift's context window [10:27, 10:38), read 20 then 2.
    page = json.loads(run(runner, "patterns", "context", DRIFT.pattern_id, "--limit", "20", "--json"))
    rest = json.loads(run(runner, "patterns", "context", DRIFT.pattern_id, "--cursor", page["next_cursor"], "--json"))
    assert (page["count"], rest["count"], rest["next_cursor"]) == (20, 2, None)
    first, more = run(runner, "patterns", "context", DRIFT.pattern_id, "--limit", "1").splitlines()
    assert first.startswith("2026-01-05T10:27:00.000Z  binance_spot         trade      {") and more.startswith(
        "more: --cursor ")
    stats = json.loads(run(runner, "patterns", "stats", "--json"))
    assert stats["river.ADWIN"] == {"confirmed": 1, "false_alarm": 0, "notes": 0, "precision": 1.0}
    # A detector nobody judged has no precision yet (before: 0.00, as if every finding were wrong).
    run(runner, "patterns", "annotate", ANOMALY.pattern_id, "--label", "note")
    assert json.loads(run(runner, "patterns", "stats", "--json"))["river.HalfSpaceTrees"]["precision"] is None
    unjudged = next(line for line in run(runner, "patterns", "stats").splitlines() if "HalfSpaceTrees" in line)
    assert unjudged.endswith("notes    1  precision -")
    bad_cursor = runner.invoke(main, ["patterns", "context", DRIFT.pattern_id, "--cursor", "garbage"])
    assert bad_cursor.exit_code == 2 and "cursor: not a cursor this API issued" in bad_cursor.output
    for command in ("annotations", "context"):
        unknown = runner.invoke(main, ["patterns", command, "nope"])
        assert unknown.exit_code == 2 and "no pattern with id 'nope'" in unknown.output


def test_out_of_range_ports_and_missing_archive_folders_are_refused(config_dir: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    port = cli.invoke(main, ["land", "--metrics-port", "99999"])
    assert port.exit_code == 2 and "Invalid value for '--metrics-port': 99999 is not in the range 0<=x<=65535" in (
        port.output)
    missing = tmp_path / "archive-typo"
    load = cli.invoke(main, ["archive", "load", "raw_events", "--start", "2026-01-05", "--end", "2026-01-06",
                             "--from", str(missing)])
    assert (load.exit_code, load.output.strip()) == (2, f"error: {missing}: no archive folder there")
