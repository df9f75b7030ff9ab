"""Bars of payloads with many fields: one decoding per payload gives the bars a JSON path per field gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from qraft_core.operators import aggregate
from qraft_core.operators.aggregate import PER_FIELD_PATHS_MAX, Aggregate
from qraft_core.operators.base import OperatorContext

T0 = datetime(2021, 6, 1, tzinfo=UTC)


def wide_events(width: int, rows: int = 600) -> pl.DataFrame:
    """`width` sensor readings per event; sensor 3 is a flag, sensor 5 sometimes text, sensor 7 sometimes absent."""
    rng = np.random.default_rng(4)
    payloads = []
    for i in range(rows):
        record: dict[str, object] = {f"sensor {j}": round(float(rng.normal(j, 1 + j)), 3) for j in range(width)}
        record["sensor 3"] = bool(i % 2)
        record["sensor 5"] = "offline" if i % 97 == 0 else record["sensor 5"]
        if i % 5 == 0:
            del record["sensor 7"]
        payloads.append(json.dumps(record))
    return pl.DataFrame({"stream": "plant", "event_id": [str(i) for i in range(rows)],
                         "timestamp": [T0 + timedelta(seconds=7 * i) for i in range(rows)], "payload": payloads})


WIDTH = PER_FIELD_PATHS_MAX + 6


@pytest.mark.parametrize("params", [{}, {"fields": [f"sensor {j}" for j in range(WIDTH) if j != 3]}])
def test_one_decoding_per_payload_gives_the_bars_of_a_json_path_per_field(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, object]
) -> None:
    events = wide_events(WIDTH)
    decoded_context = OperatorContext("plant", 60)
    decoded = Aggregate(params).apply(events, decoded_context)
    monkeypatch.setattr(aggregate, "PER_FIELD_PATHS_MAX", 10**6)
    paths_context = OperatorContext("plant", 60)
    assert_frame_equal(decoded, Aggregate(params).apply(events, paths_context))
    assert decoded_context.dropped == paths_context.dropped == (
        {"aggregate: payload.sensor 5 is not a finite number of at most 1e+150 in size (value left out)": 7}
        if params else {})
    # The flag and the field holding text are no numeric fields; the one sometimes absent is.
    assert ("sensor 3_mean" in decoded.columns, "sensor 5_mean" in decoded.columns,
            "sensor 7_mean" in decoded.columns) == ((False, False, True) if not params else (False, True, True))
    assert decoded.height == 70
