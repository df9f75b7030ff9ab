"""The table specs (what writers build frames with) declare exactly the columns of the migrations
(what the store creates): names, order and ClickHouse types, for every table."""

import re
from pathlib import Path

import polars as pl

from qraft_core.store import schema
from qraft_core.store.schema import TABLES, spec

MIGRATIONS = Path(schema.__file__).with_name("migrations")
CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\) ENGINE", re.S)
COLUMN = re.compile(r"^\s*(\w+) (.+?),?$")


def migrated_tables() -> dict[str, dict[str, str]]:
    tables = {}
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = re.sub(r"--[^\n]*", "", path.read_text())
        assert "ALTER TABLE" not in text, f"{path.name}: columns changed outside CREATE TABLE"
        for name, body in CREATE.findall(text):
            lines = [line for line in body.strip().splitlines() if line.strip()]
            columns = [COLUMN.match(line) for line in lines]
            assert all(columns), f"{path.name}: {name}: a line that is not `name type`"
            tables[name] = {m.group(1): m.group(2) for m in columns if m is not None}
    return tables


def test_every_migrated_table_has_a_spec_with_the_same_columns_and_types():
    migrated = migrated_tables()
    assert sorted(migrated) == sorted(TABLES)
    for name, columns in migrated.items():
        assert list(spec(name).columns.items()) == list(columns.items()), name


def test_writers_schemas_come_from_the_specs():
    assert spec("pattern_events").frame_schema["source_streams"] == pl.List(pl.Utf8)
    assert spec("dead_letters").frame_schema["event_time"] == pl.Datetime("ms", "UTC")  # Nullable: same type
    assert list(spec("detections").frame_schema) == list(migrated_tables()["detections"])
