"""Database poller pieces: cursor persistence, column values, identifier checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from qraft_core.adapters.database import DatabaseOptions, _decode_cursor, _encode_cursor, json_value


@pytest.mark.parametrize("value", [
    42, "k-1", 1.5, datetime(2026, 1, 5, 1, 2, 3, 456789, tzinfo=UTC),
    datetime(2026, 1, 5, 1, 2, 3, tzinfo=timezone(timedelta(hours=8))), datetime(2026, 1, 5, 1, 2, 3),
    date(2026, 1, 5), Decimal("12.50"),
])
def test_cursor_values_survive_the_state_file(value: object) -> None:
    decoded = _decode_cursor(_encode_cursor(value))
    assert decoded == value and type(decoded) is type(value)


def test_column_values_become_json() -> None:
    assert json_value(datetime(2026, 1, 5, 0, 0, 1)) == "2026-01-05T00:00:01"
    assert json_value(Decimal("12.50")) == 12.5
    assert json_value(b"\x00\xff") == "AP8="
    assert json_value(None) is None


@pytest.mark.parametrize("field", ["table", "cursor_column", "tiebreak_column", "key_column", "schema_name"])
def test_identifiers_must_be_plain(field: str) -> None:
    options = {"table": "orders", field: 'x" OR 1=1 --'}
    with pytest.raises(ValidationError, match="is not a plain identifier"):
        DatabaseOptions.model_validate(options)
    with pytest.raises(ValidationError, match="is not a plain identifier"):
        DatabaseOptions.model_validate({"table": "orders", "columns": ["id", "a-b"]})
