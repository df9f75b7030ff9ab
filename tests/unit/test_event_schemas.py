"""The JSON Schemas shipped in config/schemas are the models' own (regenerate: `qraft config schemas`)."""

import json
from pathlib import Path

from click.testing import CliRunner

from qraft_cli import main
from qraft_core.events import PatternEvent, StandardEvent

REPO = Path(__file__).resolve().parents[2]


def test_committed_schemas_match_the_models():
    for model in (StandardEvent, PatternEvent):
        committed = json.loads((REPO / "config" / "schemas" / f"{model.__name__}.schema.json").read_text())
        assert committed == model.model_json_schema()


def test_schema_a_has_exactly_the_seed_fields():
    schema = StandardEvent.model_json_schema()
    assert sorted(schema["properties"]) == sorted(
        ["event_id", "source", "type", "timestamp", "ingest_time", "payload", "meta"]
    )
    assert schema["additionalProperties"] is False


def test_the_schemas_command_writes_both_files(tmp_path):
    result = CliRunner().invoke(main, ["config", "schemas", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(Path(p).name for p in json.loads(result.stdout)["written"]) == [
        "PatternEvent.schema.json", "StandardEvent.schema.json"
    ]
