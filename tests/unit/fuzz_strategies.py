"""Hypothesis strategies for hostile records, shared by the fuzz suites (tests/unit/test_fuzz_*.py).

Every suite runs a few hundred derandomized examples per property, so it is deterministic in CI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
SLOW_FUZZ = settings(FUZZ, max_examples=60)

NOW = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)

LONE_SURROGATES = ["\ud800", "\udfff", "a\udc80b", "\udbff\ud800"]
text = st.one_of(st.text(max_size=12), st.sampled_from(LONE_SURROGATES), st.just("\x00\u2028\ufeff"))
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([400, 5000]).map(lambda digits: -(10**digits)),  # past float and str() range
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
# Keys never collide with what a record needs (timestamp, n) or what marks a control frame (id, e).
keys = text.map(lambda k: "k" + k)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=12)


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


times = st.one_of(
    st.integers(min_value=0, max_value=3 * 10**9).map(float),  # epoch seconds to 2065
    st.sampled_from(["2026-01-05T00:59:00Z", "1850-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "yesterday",
                     -1, 10**30, None, "", [], {}]),
    values,
)


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object record: a time (good or hostile) and hostile fields, maybe nested very deep."""
    record: dict[str, Any] = {"timestamp": draw(times)}
    record.update(draw(st.dictionaries(keys, values, max_size=4)))
    kind = draw(st.sampled_from(["plain", "plain", "plain", "deep", "too_deep", "oversize"]))
    if kind == "deep":
        record["kdeep"] = nested(draw(st.integers(min_value=2, max_value=63)))
    elif kind == "too_deep":
        record["kdeep"] = nested(draw(st.integers(min_value=64, max_value=3000)))
    elif kind == "oversize":
        record["kblob"] = "x" * 300_000
    return record


def record_line(record: dict[str, Any], n: int) -> bytes:
    """One JSON line (NaN and lone surrogates as JSON writes them); `n` makes every line distinct."""
    return json_line({**record, "n": n})


def json_line(value: Any) -> bytes:
    """`value` as JSON text, also when json.dumps cannot write it (written by hand instead)."""
    try:
        return json.dumps(value).encode()
    except RecursionError:  # deeper than json.dumps goes
        return b'{"timestamp": 1, "kdeep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    except ValueError:  # an integer too long for str()
        return b'{"timestamp": 1, "kbig": ' + b"9" * 5000 + b"}"


garbage = st.binary(max_size=80).map(lambda raw: raw.replace(b"\n", b" ").replace(b"\r", b" "))


@st.composite
def hostile_lines(draw: st.DrawFn, count: int = 8) -> list[bytes]:
    """Lines of a JSONL file or frames of a stream: records, garbage bytes, bare JSON values."""
    lines = []
    for n in range(draw(st.integers(min_value=1, max_value=count))):
        kind = draw(st.sampled_from(["record", "record", "record", "garbage", "value"]))
        if kind == "record":
            lines.append(record_line(draw(hostile_records()), n))
        elif kind == "garbage":
            lines.append(draw(garbage) or b"{")
        else:
            lines.append(json_line(draw(values)))
    return lines


def good_line(n: int) -> bytes:
    return json.dumps({"timestamp": (NOW - timedelta(minutes=1)).isoformat(), "n": n, "v": 1.5}).encode()


database_values = st.one_of(values, st.binary(max_size=20), st.just(Decimal("1e-400")), st.just(Decimal("NaN")),
                            st.datetimes(timezones=st.just(UTC)))
