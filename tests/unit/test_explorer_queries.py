"""The explorer's queries on the in-memory store: inbox paging with verdicts, series, raw values."""

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from qraft_core.annotations import add_annotation
from qraft_core.api.explorer import queries
from qraft_core.events import iso as iso_ms
from qraft_core.explain.catalog import PatternQuery
from qraft_core.operators.stream_names import MAX_STREAM_NAME_CHARS
from qraft_core.plugins.markets.examples import example_patterns, pattern_rows

PATTERNS = example_patterns()
DAY = PatternQuery(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))


def _pages(store, verdict, limit):
    ids, cursor = [], None
    while True:
        items, cursor = queries.inbox_page(store, DAY, verdict, limit, cursor)
        ids.append([i["pattern_id"] for i in items])
        if cursor is None:
            return ids


def test_inbox_pages_keep_their_size_under_a_verdict_filter(memory_store):
    memory_store.insert("pattern_events", pattern_rows(PATTERNS))
    drift, anomaly, cluster, freq = (p.pattern_id for p in PATTERNS)
    add_annotation(memory_store, anomaly, "false_alarm")
    add_annotation(memory_store, freq, "confirmed")
    add_annotation(memory_store, freq, "note", "still confirmed: notes are no verdict")
    assert _pages(memory_store, "any", 3) == [[drift, anomaly, cluster], [freq]]
    assert _pages(memory_store, "unreviewed", 1) == [[drift], [cluster]]
    assert _pages(memory_store, "confirmed", 1) == [[freq]]
    assert _pages(memory_store, "false_alarm", 5) == [[anomaly]]
    items, _ = queries.inbox_page(memory_store, DAY, "any", 4, None)
    assert [i["verdict"] for i in items] == ["unreviewed", "false_alarm", "unreviewed", "confirmed"]


def test_feature_series_reads_whatever_columns_a_stream_has(memory_store):
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    memory_store.insert("features", pl.DataFrame({
        "window_start": [t0] * 3,
        "bar_time": [t0, t0 + timedelta(seconds=10), t0 + timedelta(seconds=20)],
        "stream": ["sensors:a"] * 3,
        "event_count": [3, 4, 5],
        # A column that appears later is padded with nulls before it.
        "names": [["value_mean"], ["value_mean"], ["value_mean", "value_max"]],
        "values": [[1.0], [2.0], [3.0, 9.0]],
        "items": [[], [], []],
    }, schema_overrides={"items": pl.List(pl.Utf8)}))
    series = queries.feature_series(memory_store, "sensors:a", t0, t0 + timedelta(minutes=1), 10)
    assert series["columns"] == {"value_mean": [1.0, 2.0, 3.0], "value_max": [None, None, 9.0]}
    assert series["event_count"] == [3, 4, 5] and series["truncated"] is False
    assert queries.feature_series(memory_store, "sensors:a", t0, t0 + timedelta(minutes=1), 2)["truncated"]


def test_raw_values_keep_measurements_of_the_streams_symbol(memory_store):
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        ('{"s": "AAA", "p": "10.5", "q": 2, "t": 100, "E": %d}', 0),
        ('{"s": "BBB", "p": "99.0", "q": 7, "t": 101, "E": %d}', 1),
        ('{"s": "AAA", "p": "11.0", "q": 1, "t": 102, "E": %d}', 2),
        ('{"s": "AAA", "p": "10.0", "q": 3, "t": 103, "E": %d, "note": "x"}', 3),
    ]
    times = [t0 + timedelta(seconds=i) for _, i in rows]
    memory_store.insert("clean_events", pl.DataFrame({
        "event_id": [f"e{i}" for _, i in rows], "source": ["mkt"] * 4, "type": ["trade"] * 4,
        "timestamp": times, "ingest_time": times, "window_start": [t0] * 4,
        "payload": [text % (int(ts.timestamp() * 1000)) for (text, _), ts in zip(rows, times, strict=True)],
        "repaired": [0] * 4,
    }))
    raw = queries.raw_values(memory_store, "mkt:AAA", t0, t0 + timedelta(minutes=1), 100)
    # The trade id (a counter) and the event time (epoch ms) are not measurements.
    assert raw["columns"] == {"p": [10.5, 11.0, 10.0], "q": [2.0, 1.0, 3.0]}
    assert len(raw["times"]) == 3


def test_raw_values_of_a_stream_whose_key_the_name_rule_changed(memory_store):
    from qraft_core.operators.stream_names import stream_name

    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    keys = ["web\x1b[2J", "web", "L" * 300]
    memory_store.insert("clean_events", pl.DataFrame({
        "event_id": ["e0", "e1", "e2"], "source": ["hosts"] * 3, "type": ["record"] * 3,
        "timestamp": [t0 + timedelta(seconds=i) for i in range(3)],
        "ingest_time": [t0] * 3, "window_start": [t0] * 3,
        "payload": [json.dumps({"host": key, "load": 1.5 + i}) for i, key in enumerate(keys)],
        "repaired": [0] * 3,
    }))
    for index, key in ((0, keys[0]), (2, keys[2])):
        name = stream_name(f"hosts:{key}")
        assert name != f"hosts:{key}"
        raw = queries.raw_values(memory_store, name, t0, t0 + timedelta(minutes=1), 100)
        assert raw["times"] == [iso_ms(t0 + timedelta(seconds=index))]


def test_a_stored_pattern_that_does_not_read_is_skipped_and_named_not_fatal_to_its_page(memory_store, caplog):
    from qraft_core.explain.catalog import patterns_page

    rows = pattern_rows(PATTERNS)
    broken = PATTERNS[1].pattern_id
    # What a non-finite score became in JSON before detectors' signals were checked.
    body = json.loads(rows["body"][1])
    body["details"]["metrics"]["score"] = None
    rows = rows.with_columns(pl.when(pl.col("pattern_id") == broken).then(pl.lit(json.dumps(body)))
                             .otherwise(pl.col("body")).alias("body"))
    memory_store.insert("pattern_events", rows)
    page, cursor = patterns_page(memory_store, DAY, 10)
    assert [p.pattern_id for p in page] == [p.pattern_id for p in PATTERNS if p.pattern_id != broken]
    assert cursor is None
    assert f"pattern {broken} is skipped: its stored body does not read as a pattern event " \
           "(details.metrics.score: Input should be a valid number)" in caplog.text


class CountingStore:
    """The in-memory store, counting the calls the code under test makes."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.store, name)


def test_the_stream_catalog_costs_a_few_grouped_queries_whatever_the_number_of_streams(memory_store):
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    streams = [f"bulk:{i:04d}" for i in range(3000)] + ["bulk:" + "Y" * 5000]
    bars = 2
    memory_store.insert("features", pl.DataFrame({
        "window_start": [t0] * bars * len(streams),
        "bar_time": [t0 + timedelta(minutes=b) for _ in streams for b in range(bars)],
        "stream": [s for s in streams for _ in range(bars)],
        "event_count": [1] * bars * len(streams),
        # The columns are the newest bar's: the older one has others.
        "names": [["old"] if b == 0 else ["value_mean", "value_max"] for _ in streams for b in range(bars)],
        "values": [[1.0] if b == 0 else [1.0, 2.0] for _ in streams for b in range(bars)],
        "items": [[] for _ in range(bars * len(streams))],
    }, schema_overrides={"items": pl.List(pl.Utf8)}))
    drift = PATTERNS[0].model_copy(update={"source_streams": ["bulk:0001", "bulk:0002"]})
    other = PATTERNS[1].model_copy(update={"source_streams": ["bulk:0001"]})
    memory_store.insert("pattern_events", pattern_rows([drift, other]))
    counting = CountingStore(memory_store)
    catalog = queries.stream_catalog(counting)
    assert len(counting.calls) <= 3
    assert len(catalog) == len(streams)
    by_name = {c["stream"]: c for c in catalog}
    assert by_name["bulk:0001"] == {
        "stream": "bulk:0001", "columns": ["value_mean", "value_max"], "bars": 2,
        "first_bar": iso_ms(t0), "last_bar": iso_ms(t0 + timedelta(minutes=1)), "findings": 2,
    }
    assert by_name["bulk:0002"]["findings"] == 1 and by_name["bulk:0003"]["findings"] == 0
    # A name longer than any the pipeline makes is cut, not sent whole.
    assert max(len(c["stream"]) for c in catalog) <= MAX_STREAM_NAME_CHARS
