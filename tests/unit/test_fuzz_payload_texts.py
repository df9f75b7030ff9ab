"""Wide payloads are decoded once for all their fields (`payload_texts`); what the statistics read
from them must be what a JSON path per field (`payload_field`) reads: the same values present, the
same numbers."""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from qraft_core.operators.aggregate import finite_number
from qraft_core.payload import payload_field, payload_texts
from tests.unit.fuzz_strategies import FUZZ

# What the lander lets into a payload: finite floats, integers up to 13,000 bits, any text.
scalars = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from([10**308, 10**309, -(10**400)]),
    st.text(max_size=8), st.sampled_from(["1.5", " 2", "1e999", "inf", "NaN", "-0", "1_000", "0x10", "true"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner,
                                                                                           max_size=2), max_leaves=6)
names = st.one_of(st.sampled_from(["a", "b", "a.b", "Water flow [l/s]", "it's", 'say "hi"', "b\\s", "é"]),
                  st.text(max_size=6))
payloads = st.one_of(st.dictionaries(names, values, max_size=5).map(json.dumps),
                     st.sampled_from(["[1, 2]", '"text"', "null", "not JSON", '{"a": 1, "a": "x"}']))


def read(texts: pl.DataFrame | pl.Series) -> list[tuple[bool, Any]]:
    frame = texts.to_frame("t") if isinstance(texts, pl.Series) else texts.rename({texts.columns[0]: "t"})
    return frame.select(pl.col("t").is_null().alias("absent"), finite_number(pl.col("t")).alias("number")).rows()


@FUZZ
@given(st.lists(payloads, min_size=1, max_size=6))
def test_one_decoding_reads_every_field_as_its_own_json_path_does(texts: list[str]) -> None:
    frame = pl.DataFrame({"payload": texts})
    fields = sorted({name for text in texts for name in (json.loads(text) if text.startswith("{") else {})}
                    | {"absent"})
    decoded = payload_texts(frame, fields)
    for name in fields:
        ours, paths = read(decoded[name]), read(frame.select(payload_field(name)))
        assert [absent for absent, _ in ours] == [absent for absent, _ in paths], name
        # The JSON path's parser may miss a float's last bit (4.7859966953538556e-172 for 4.785996695353855e-172).
        assert all(a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-14))
                   for (_, a), (_, b) in zip(ours, paths, strict=True)), name
