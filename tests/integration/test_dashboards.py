"""The files in dashboards/: they parse, name only metrics the processes expose, and the
Superset bundle's SQL gives the expected answers on a real, migrated embedded ClickHouse, read
through SQLAlchemy with the connection string `make superset` gives Superset."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import pytest
import sqlalchemy
import sqlglot
import yaml
from prometheus_client.metrics import MetricWrapperBase

from qraft_cli.sources import sources_run
from qraft_core import metrics, monitoring
from qraft_core.config import ApiConfig, LanderConfig, load_qraft_config
from qraft_core.store import open_store
from qraft_core.store.schema import TS, polars_dtype, spec
from qraft_core.store.sessions import lock_held, lock_path_of
from qraft_core.superset import BUNDLE_DATABASE, SUPERSET_ENV, prepare, superset_uri
from qraft_core.superset import main as superset_main
from qraft_dagster import monitoring as dagster_monitoring

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
SUPERSET = DASHBOARDS / "superset"
GRAFANA = DASHBOARDS / "grafana" / "qraft.json"
PROMETHEUS = DASHBOARDS / "prometheus"
ALERTMANAGER = DASHBOARDS / "alertmanager"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def superset_files(folder: str) -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(SUPERSET)): load_yaml(p) for p in sorted((SUPERSET / folder).rglob("*.yaml"))}


DATABASES = superset_files("databases")
DATASETS = superset_files("datasets")
CHARTS = superset_files("charts")
DASHBOARD_FILES = superset_files("dashboards")
DATASETS_BY_UUID = {d["uuid"]: d for d in DATASETS.values()}
DATASETS_BY_NAME = {d["table_name"]: d for d in DATASETS.values()}
CHARTS_BY_UUID = {c["uuid"]: c for c in CHARTS.values()}


# -- every file parses ------------------------------------------------------------------------

def test_every_dashboard_file_parses_into_a_mapping():
    # Superset's own environment (superset_env/.venv, made by `make superset`) is not ours to check.
    files = sorted(p for p in DASHBOARDS.rglob("*")
                   if p.suffix in {".yaml", ".yml", ".json"} and ".venv" not in p.parts)
    parsed = {str(p.relative_to(DASHBOARDS)): json.loads(p.read_text()) if p.suffix == ".json"
              else load_yaml(p) for p in files}
    assert all(isinstance(doc, dict) for doc in parsed.values())
    assert {"grafana/qraft.json", "prometheus/prometheus.yml", "prometheus/alerts.yml",
            "superset/metadata.yaml", "superset/databases/qraft.yaml",
            "superset/dashboards/qraft_overview.yaml"} <= set(parsed)
    assert len(DATASETS) >= 6 and len(CHARTS) >= 6


# -- the Superset bundle ----------------------------------------------------------------------
# Keys Superset's ImportV1*Schema accept (marshmallow rejects unknown keys) and require.
KEYS: dict[str, tuple[set[str], set[str]]] = {
    "databases": ({"database_name", "sqlalchemy_uri", "uuid", "version"},
                  {"password", "cache_timeout", "expose_in_sqllab", "allow_run_async", "allow_ctas",
                   "allow_cvas", "allow_dml", "extra"}),
    "datasets": ({"table_name", "uuid", "version", "database_uuid"},
                 {"main_dttm_col", "description", "default_endpoint", "offset", "cache_timeout", "schema",
                  "sql", "params", "template_params", "filter_select_enabled", "fetch_values_predicate",
                  "extra", "columns", "metrics"}),
    "charts": ({"slice_name", "viz_type", "uuid", "version", "dataset_uuid"},
               {"params", "query_context", "cache_timeout"}),
    "dashboards": ({"dashboard_title", "uuid", "version"},
                   {"description", "css", "slug", "position", "metadata"}),
}
COLUMN_KEYS = {"column_name", "verbose_name", "is_dttm", "is_active", "type", "groupby", "filterable",
               "expression", "description", "python_date_format", "extra"}
METRIC_KEYS = {"metric_name", "verbose_name", "metric_type", "expression", "description", "d3format", "extra",
               "warning_text"}


def test_superset_bundle_has_the_export_layout_and_only_keys_superset_accepts():
    assert load_yaml(SUPERSET / "metadata.yaml")["version"] == "1.0.0"
    assert load_yaml(SUPERSET / "metadata.yaml")["type"] == "Dashboard"
    top = {p.name for p in SUPERSET.iterdir()}
    assert top == {"metadata.yaml", "databases", "datasets", "charts", "dashboards"}
    for folder, files in (("databases", DATABASES), ("datasets", DATASETS), ("charts", CHARTS),
                          ("dashboards", DASHBOARD_FILES)):
        required, optional = KEYS[folder]
        for name, doc in files.items():
            assert required <= set(doc), (name, required - set(doc))
            assert set(doc) <= required | optional, (name, set(doc) - required - optional)
            assert doc["version"] == "1.0.0"
            uuid.UUID(doc["uuid"])
    for name, dataset in DATASETS.items():
        assert PurePosixPath(name).parent == PurePosixPath("datasets/qraft"), name
        assert all(set(c) <= COLUMN_KEYS for c in dataset["columns"]), name
        assert all(set(m) <= METRIC_KEYS and m["expression"] for m in dataset["metrics"]), name
        # Superset wraps a virtual dataset's SQL in a subquery: no statement end, no line comment.
        assert ";" not in dataset["sql"] and "--" not in dataset["sql"], name
    every_uuid = [d["uuid"] for files in (DATABASES, DATASETS, CHARTS, DASHBOARD_FILES)
                  for d in files.values()]
    assert len(every_uuid) == len(set(every_uuid))


def test_the_bundled_database_is_the_embedded_default_store_through_clickhouse_connect(config_dir):
    (database,) = DATABASES.values()
    assert database["sqlalchemy_uri"] == "clickhousedb:///default?interface=chdb&path=.qraft/clickhouse"
    # The launch replaces the relative path with the configured data directory's.
    config = load_qraft_config(config_dir)
    assert superset_uri(config.store_dsn) == (
        f"clickhousedb:///default?interface=chdb&path={config.data_dir.resolve()}/clickhouse")


def test_the_launch_stops_with_a_message_without_an_admin_password(config_dir, monkeypatch, capsys):
    monkeypatch.delenv("QRAFT_SUPERSET_PASSWORD", raising=False)
    assert superset_main([]) == 2
    assert capsys.readouterr().err == "error: set QRAFT_SUPERSET_PASSWORD to the password of the Superset admin\n"


def test_a_server_store_is_given_to_superset_in_the_dialects_form_and_printed_redacted(config_dir, monkeypatch):
    monkeypatch.setenv("QRAFT_STORE_DSN", "https://qraft:s3cret-pw@ch.internal:8443/analytics")
    plan = prepare(config_dir)
    assert plan["uri"] == "clickhousedb://qraft:***@ch.internal:8443/analytics?secure=true"
    assert plan["store_lock"] == ""
    with zipfile.ZipFile(plan["bundle"]) as bundle:
        database = yaml.safe_load(bundle.read(f"superset/{BUNDLE_DATABASE}"))
    assert database["sqlalchemy_uri"] == "clickhousedb://qraft:s3cret-pw@ch.internal:8443/analytics?secure=true"
    assert Path(plan["bundle"]).stat().st_mode & 0o077 == 0


def test_every_dataset_parses_with_superset_s_sql_parser_as_one_statement():
    # Superset 6.1 parses a virtual dataset's SQL with sqlglot's ClickHouse dialect before it runs it,
    # and rejects what sqlglot cannot read (a multi-array ARRAY JOIN, for one) though ClickHouse could.
    for name, dataset in DATASETS.items():
        statements = sqlglot.parse(dataset["sql"], dialect="clickhouse")
        assert len(statements) == 1, name


def test_datasets_read_deduplicated_tables_with_final():
    for name, dataset in DATASETS.items():
        reads = re.findall(r"\bFROM\s+(\w+)(\s+FINAL)?", dataset["sql"])
        assert reads, name
        for table, final in reads:
            assert bool(final) == bool(spec(table).dedup_key), (name, table)


def test_superset_uuid_references_resolve():
    database_uuids = {d["uuid"] for d in DATABASES.values()}
    assert all(d["database_uuid"] in database_uuids for d in DATASETS.values())
    assert all(c["dataset_uuid"] in DATASETS_BY_UUID for c in CHARTS.values())
    (dashboard,) = DASHBOARD_FILES.values()
    position = dashboard["position"]
    placed = [c["meta"] for c in position.values() if isinstance(c, dict) and c.get("type") == "CHART"]
    assert sorted(m["uuid"] for m in placed) == sorted(CHARTS_BY_UUID)
    assert len({m["chartId"] for m in placed}) == len(placed)
    assert all(m["sliceName"] == CHARTS_BY_UUID[m["uuid"]]["slice_name"] for m in placed)
    for key, component in position.items():
        if not isinstance(component, dict):
            continue
        assert component["id"] == key
        for child in component.get("children", []):
            assert key in position[child]["parents"], (key, child)
    native_filters = dashboard["metadata"].get("native_filter_configuration", [])
    targets = {t["datasetUuid"] for f in native_filters for t in f["targets"] if "datasetUuid" in t}
    assert targets <= set(DATASETS_BY_UUID)
    rows = [position[r] for r in position["GRID_ID"]["children"]]
    assert all(sum(position[c]["meta"]["width"] for c in row["children"]) <= 12 for row in rows)


# A mixed chart's second query has the same keys ending in _b; a bubble chart names a metric per axis.
QUERY_SUFFIXES = {"mixed_timeseries": ("", "_b")}
BUBBLE_METRICS, BUBBLE_COLUMNS = ("x", "y", "size"), ("entity", "series")


def chart_metrics(params: dict[str, Any], suffix: str = "") -> list[str]:
    named = params.get("metrics" + suffix, []) + ([params["metric"]] if "metric" in params else [])
    if params["viz_type"] == "bubble_v2":
        named += [params[axis] for axis in BUBBLE_METRICS]
    return named + ([params["timeseries_limit_metric"]] if "timeseries_limit_metric" in params else [])


def chart_dimensions(params: dict[str, Any], suffix: str = "") -> list[str]:
    if params["viz_type"] == "bubble_v2":
        return [params[key] for key in BUBBLE_COLUMNS]
    return list(params.get("groupby" + suffix, []))


def chart_columns(params: dict[str, Any], suffix: str = "") -> list[str]:
    columns = chart_dimensions(params, suffix) + params.get("all_columns", [])
    columns += [json.loads(order)[0] for order in params.get("order_by_cols", [])]
    return columns + [f["subject"] for f in params.get("adhoc_filters" + suffix, [])]


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_charts_use_their_datasets_saved_metrics_and_columns(name):
    chart = CHARTS[name]
    dataset = DATASETS_BY_UUID[chart["dataset_uuid"]]
    params = chart["params"]
    columns = {c["column_name"]: c for c in dataset["columns"]}
    assert params["viz_type"] == chart["viz_type"]
    for suffix in QUERY_SUFFIXES.get(chart["viz_type"], ("",)):
        assert params.get("query_mode") == "raw" or chart_metrics(params, suffix), (name, suffix)
        assert set(chart_metrics(params, suffix)) <= {m["metric_name"] for m in dataset["metrics"]}
        assert set(chart_columns(params, suffix)) <= set(columns)
    if "x_axis" in params:
        assert columns[params["x_axis"]]["is_dttm"]


def test_the_folder_zipped_as_documented_imports_with_its_root_folder_removed(tmp_path):
    readme = (DASHBOARDS / "README.md").read_text()
    assert "zip -r /tmp/qraft_superset.zip superset" in readme
    archive = tmp_path / "qraft_superset.zip"
    if shutil.which("zip"):
        subprocess.run(["zip", "-qr", str(archive), "superset"], cwd=DASHBOARDS, check=True)
    else:
        shutil.make_archive(str(archive.with_suffix("")), "zip", root_dir=DASHBOARDS, base_dir="superset")
    with zipfile.ZipFile(archive) as bundle:
        # Superset's importer drops each entry's first path component, then keeps *.yaml files.
        names = {str(PurePosixPath(*PurePosixPath(n).parts[1:]))
                 for n in bundle.namelist() if n.endswith(".yaml")}
    assert names == {"metadata.yaml", *DATABASES, *DATASETS, *CHARTS, *DASHBOARD_FILES}


# -- the Superset SQL on a real store ---------------------------------------------------------

def zero(ch_type: str) -> Any:
    if ch_type.startswith("Array("):
        return []
    if ch_type.startswith("Nullable("):
        return None
    return {"String": "", "LowCardinality(String)": "", TS: T0}.get(ch_type, 0)


def frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of `table`, every unnamed column left at its type's zero value."""
    columns = spec(table).columns
    full = [{name: row.get(name, zero(ch_type)) for name, ch_type in columns.items()} for row in rows]
    return pl.DataFrame(full, schema={name: polars_dtype(ch_type) for name, ch_type in columns.items()})


def raw(event_id: str, source: str, event_s: float, landed_s: float) -> dict[str, Any]:
    return {"event_id": event_id, "source": source, "type": "trade", "timestamp": at(event_s),
            "ingest_time": at(event_s), "landed_at": at(landed_s), "payload": "{}"}


def pattern(pattern_id: str, type_: str, streams: list[str], confidence: float, cross_validated: int,
            algorithm: str, time_s: float, detectors: list[str], top_field: str = "price",
            **details: Any) -> dict[str, Any]:
    body = {"details": {"detectors": detectors, **details},
            "explain": {"top_contributors": [{"field": top_field, "score": 0.7}, {"field": "other", "score": 0.3}]}}
    return {"pattern_id": pattern_id, "type": type_, "timestamp": at(time_s),
            "window_start": at(time_s // 60 * 60), "source_streams": streams, "confidence": confidence,
            "cross_validated": cross_validated, "algorithm": algorithm, "algorithm_version": "1.0",
            "body": json.dumps(body)}


def itemset(pattern_id: str, time_s: float, confidence: float, support: float, lift: float,
            growth: float) -> dict[str, Any]:
    return pattern(pattern_id, "freq_pattern", ["news"], confidence, 0, "FrequentItemsets", time_s,
                   ["news_itemsets"], itemset=["approval", "etf"],
                   metrics={"support": support, "lift": lift, "growth": growth})


def bar(stream: str, time_s: float, values: dict[str, float]) -> dict[str, Any]:
    return {"window_start": at(time_s // 60 * 60), "bar_time": at(time_s), "stream": stream, "event_count": 3,
            "names": list(values), "values": list(values.values())}


SEED: dict[str, list[dict[str, Any]]] = {
    # e1 arrives twice (a redelivery); FINAL reads must count it once.
    "raw_events": [raw("e1", "btc", 10, 20), raw("e2", "btc", 40, 65), raw("e3", "btc", 75, 90),
                   raw("e4", "btc", 105, 110), raw("n1", "news", 30, 45), raw("e1", "btc", 10, 20)],
    "clean_events": [
        {"event_id": "e1", "source": "btc", "type": "trade", "timestamp": at(10), "window_start": T0,
         "repaired": 1},
        {"event_id": "n1", "source": "news", "type": "trade", "timestamp": at(30), "window_start": T0},
    ],
    "dead_letters": [
        {"letter_id": "L1", "stage": "land", "source": "btc", "reason": "malformed JSON: Expecting value",
         "received_at": at(20)},
        {"letter_id": "L2", "stage": "clean", "source": "btc", "event_id": "e2", "event_time": at(40),
         "reason": "payload.p: expected a positive number, got 'abc'", "window_start": T0,
         "received_at": at(70)},
        {"letter_id": "L3", "stage": "clean", "source": "btc", "event_id": "e4", "event_time": at(105),
         "reason": "event time is 400s after its ingest time (more than max_future_s=300)",
         "window_start": at(60), "received_at": at(130)},
        {"letter_id": "L1", "stage": "land", "source": "btc", "reason": "malformed JSON: Expecting value",
         "received_at": at(20)},
    ],
    "pattern_events": [
        pattern("p1", "concept_drift", ["btc"], 0.9, 1, "ADWIN", 30, ["adwin_price", "moa_adwin_price"]),
        pattern("p2", "anomaly", ["btc", "news"], 0.6, 0, "HalfSpaceTrees", 70, ["hst_price"]),
        pattern("p3", "anomaly", ["news"], 0.7, 0, "HalfSpaceTrees", 80, ["hst_news"]),
        pattern("p1", "concept_drift", ["btc"], 0.9, 1, "ADWIN", 30, ["adwin_price", "moa_adwin_price"]),
        itemset("p4", 150, 0.8, support=0.25, lift=3.0, growth=5.0),
        itemset("p5", 400, 0.6, support=0.35, lift=2.0, growth=3.0),
    ],
    # btc: two features; eth: one, and a NaN bar the series and the projection leave out; news: items only.
    "features": [
        bar("btc", 0, {"price": 0.0, "volume": 10.0}), bar("btc", 60, {"price": 1.0, "volume": 9.0}),
        bar("btc", 120, {"price": 2.0, "volume": 6.0}), bar("btc", 180, {"price": 3.0, "volume": 1.0}),
        bar("eth", 0, {"price": 1.0}), bar("eth", 60, {"price": 3.0}), bar("eth", 120, {"price": math.nan}),
        {**bar("news", 0, {}), "items": ["approval", "etf"]},
    ],
    "annotations": [
        {"annotation_id": "a1", "pattern_id": "p1", "label": "confirmed", "created_at": at(200)},
        {"annotation_id": "a2", "pattern_id": "p1", "label": "false_alarm", "created_at": at(300)},
        {"annotation_id": "a3", "pattern_id": "p2", "label": "note", "note": "news echo",
         "created_at": at(250)},
        {"annotation_id": "a4", "pattern_id": "p3", "label": "confirmed", "created_at": at(260)},
        {"annotation_id": "a5", "pattern_id": "p3", "label": "note", "created_at": at(270)},
        {"annotation_id": "a6", "pattern_id": "p4", "label": "confirmed", "created_at": at(280)},
    ],
    "detections": [
        {"signal_id": "s1", "window_start": T0, "time": at(30), "detector": "adwin_price", "engine": "river",
         "stream": "btc", "type": "concept_drift", "score": 3.0, "confidence": 0.9},
        {"signal_id": "s2", "window_start": T0, "time": at(31), "detector": "moa_adwin_price",
         "engine": "capymoa", "stream": "btc", "type": "concept_drift", "score": 2.0, "confidence": 0.8},
        {"signal_id": "s3", "window_start": at(60), "time": at(70), "detector": "hst_price",
         "engine": "river", "stream": "btc", "type": "anomaly", "score": 0.5, "confidence": 0.6},
    ],
}


def launch_uri(config_dir: Path) -> str:
    """The database URI in the zip `make superset` imports."""
    with zipfile.ZipFile(prepare(config_dir)["bundle"]) as bundle:
        return yaml.safe_load(bundle.read(f"superset/{BUNDLE_DATABASE}"))["sqlalchemy_uri"]


@pytest.fixture
def seeded_client(config_dir: Path) -> Iterator[sqlalchemy.Connection]:
    """A SQLAlchemy connection, by the launch's connection string, to the configured store holding SEED.

    The store stays in a session meanwhile: chDB admits one engine per process, which both share.
    """
    store = open_store(load_qraft_config(config_dir).store_dsn, lock_timeout_s=30)
    with store.session():
        # Duplicates stay in separate parts, as a redelivery's do until a merge: only FINAL collapses them.
        store._client.command("SYSTEM STOP MERGES")
        for table, rows in SEED.items():
            for start in range(len(rows)):
                store.insert(table, frame(table, rows[start:start + 1]))
        engine = sqlalchemy.create_engine(launch_uri(config_dir))
        with engine.connect() as connection:
            yield connection
        engine.dispose()
        store._client.command("SYSTEM START MERGES")


def query(connection: sqlalchemy.Connection, sql: str) -> list[tuple[Any, ...]]:
    # The dialect hands back UTC times without a zone.
    return [tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in row)
            for row in connection.exec_driver_sql(sql).fetchall()]


def virtual(dataset: str) -> str:
    return f"({DATASETS_BY_NAME[dataset]['sql']}) AS virtual_table"


GRAINS = {"PT1M": 1, "PT5M": 5, "PT15M": 15}


def where(filters: list[dict[str, Any]]) -> str:
    """The equality filters of a chart's query (the time range is left open)."""
    tests = [f"{f['subject']} = {f['comparator']!r}" for f in filters if f["operator"] == "=="]
    return f" WHERE {' AND '.join(tests)}" if tests else ""


def chart_sql(chart: dict[str, Any], suffix: str = "") -> str:
    """The query shape Superset sends for the chart (time grain, group by, saved metrics, filters)."""
    dataset = DATASETS_BY_UUID[chart["dataset_uuid"]]
    params = chart["params"]
    expression = {m["metric_name"]: m["expression"] for m in dataset["metrics"]}
    source = f"({dataset['sql']}) AS virtual_table"
    if params.get("query_mode") == "raw":
        order = ", ".join(f"{column} {'ASC' if ascending else 'DESC'}"
                          for column, ascending in map(json.loads, params["order_by_cols"]))
        return (f"SELECT {', '.join(params['all_columns'])} FROM {source} ORDER BY {order} "
                f"LIMIT {params['row_limit']}")
    dimensions = chart_dimensions(params, suffix)
    selected = [f"{c} AS {c}" for c in dimensions]
    if "x_axis" in params:
        x = params["x_axis"]
        minutes = GRAINS[params["time_grain_sqla"]]
        selected.insert(0, f"toStartOfInterval(toDateTime({x}), INTERVAL {minutes} MINUTE) AS {x}")
        dimensions.insert(0, x)
    selected += [f"{expression[m]} AS {m}" for m in dict.fromkeys(chart_metrics(params, suffix))]
    group = f" GROUP BY {', '.join(dimensions)} ORDER BY {', '.join(dimensions)}" if dimensions else ""
    return f"SELECT {', '.join(selected)} FROM {source}{where(params.get('adhoc_filters' + suffix, []))}{group}"


def chart_queries(chart: dict[str, Any]) -> list[str]:
    return [chart_sql(chart, suffix) for suffix in QUERY_SUFFIXES.get(chart["viz_type"], ("",))]


def test_every_dataset_runs_with_its_declared_columns_and_every_metric(seeded_client):
    for name, dataset in DATASETS.items():
        result = seeded_client.exec_driver_sql(dataset["sql"])
        types = {column: type_name for column, type_name, *_ in result.cursor.description}
        assert result.fetchall(), name
        assert list(types) == [c["column_name"] for c in dataset["columns"]], name
        for column in dataset["columns"]:
            assert ("DateTime" in types[column["column_name"]]) == column["is_dttm"], (name, column)
        assert dataset["main_dttm_col"] in {c["column_name"] for c in dataset["columns"] if c["is_dttm"]}
        dimension = next(c["column_name"] for c in dataset["columns"] if c["groupby"])
        for metric in dataset["metrics"]:
            sql = (f"SELECT {dimension} AS {dimension}, {metric['expression']} AS {metric['metric_name']} "
                   f"FROM ({dataset['sql']}) AS virtual_table GROUP BY {dimension}")
            assert query(seeded_client, sql), (name, metric["metric_name"])


def test_every_chart_query_runs(seeded_client):
    for name, chart in CHARTS.items():
        for sql in chart_queries(chart):
            assert query(seeded_client, sql), (name, sql)


def test_landed_per_minute_counts_each_event_once_by_landing_minute(seeded_client):
    sql = f"SELECT * FROM {virtual('qraft_landed_per_minute')} ORDER BY minute, source"
    assert query(seeded_client, sql) == [
        (T0, "btc", 1, 10.0), (T0, "news", 1, 15.0), (at(60), "btc", 3, 15.0),
    ]


def test_clean_vs_raw_accounts_for_every_raw_event_of_a_window(seeded_client):
    sql = f"SELECT * FROM {virtual('qraft_clean_vs_raw')} ORDER BY window_start, source"
    assert query(seeded_client, sql) == [
        (T0, "btc", 2, 1, 1, 1, 0), (T0, "news", 1, 1, 0, 0, 0), (at(60), "btc", 2, 0, 0, 1, 1),
    ]


def test_dead_letters_group_by_stage_and_kind_of_reason(seeded_client):
    sql = (f"SELECT stage, reason_kind, count() FROM {virtual('qraft_dead_letters')} "
           "GROUP BY stage, reason_kind ORDER BY stage, reason_kind")
    assert query(seeded_client, sql) == [
        ("clean", "event time is Ns after its ingest time (more than max_future_s=N)", 1),
        ("clean", "payload.p", 1),
        ("land", "malformed JSON", 1),
    ]


def test_findings_list_each_pattern_once_with_its_streams_and_detectors(seeded_client):
    sql = ("SELECT pattern_id, time, type, streams, confidence, algorithm, detectors "
           f"FROM {virtual('qraft_findings')} ORDER BY pattern_id")
    assert query(seeded_client, sql) == [
        ("p1", at(30), "concept_drift", "btc", 0.9, "ADWIN", "adwin_price, moa_adwin_price"),
        ("p2", at(70), "anomaly", "btc, news", 0.6, "HalfSpaceTrees", "hst_price"),
        ("p3", at(80), "anomaly", "news", 0.7, "HalfSpaceTrees", "hst_news"),
        ("p4", at(150), "freq_pattern", "news", 0.8, "FrequentItemsets", "news_itemsets"),
        ("p5", at(400), "freq_pattern", "news", 0.6, "FrequentItemsets", "news_itemsets"),
    ]


def chart_rows(client: Any, file_name: str) -> list[tuple[Any, ...]]:
    return query(client, chart_sql(CHARTS[f"charts/{file_name}.yaml"]))


def test_pattern_charts_count_and_average_distinct_patterns_per_stream_and_type(seeded_client):
    # 5-minute buckets: p1-p4 in the first, p5 (at 400 s) in the second.
    assert chart_rows(seeded_client, "patterns_over_time_by_stream") == [
        (T0, "btc", 2), (T0, "news", 3), (at(300), "news", 1),
    ]
    assert chart_rows(seeded_client, "patterns_over_time_by_type") == [
        (T0, "anomaly", 2), (T0, "concept_drift", 1), (T0, "freq_pattern", 1), (at(300), "freq_pattern", 1),
    ]
    # p2 is on two streams but weighs once: (0.6 + 0.7) / 2, not (0.6 + 0.6 + 0.7) / 3; 15-minute buckets.
    assert chart_rows(seeded_client, "confidence_by_type") == [
        (T0, "anomaly", pytest.approx(0.65)), (T0, "concept_drift", pytest.approx(0.9)),
        (T0, "freq_pattern", pytest.approx(0.7)),
    ]
    assert chart_rows(seeded_client, "cross_validated_share") == [(1 / 5,)]


def test_verdicts_take_the_latest_verdict_and_leave_notes_unreviewed(seeded_client):
    sql = f"SELECT pattern_id, algorithm, verdict, notes FROM {virtual('qraft_verdicts')} ORDER BY pattern_id"
    assert query(seeded_client, sql) == [
        ("p1", "ADWIN", "false_alarm", 0), ("p2", "HalfSpaceTrees", "unreviewed", 1),
        ("p3", "HalfSpaceTrees", "confirmed", 1), ("p4", "FrequentItemsets", "confirmed", 0),
        ("p5", "FrequentItemsets", "unreviewed", 0),
    ]
    assert chart_rows(seeded_client, "verdicts_per_algorithm") == [
        ("ADWIN", 1, 0, 1, 0.0), ("FrequentItemsets", 2, 1, 0, 1.0), ("HalfSpaceTrees", 2, 1, 0, 1.0),
    ]


def test_the_series_chart_draws_finite_feature_values_and_findings_per_stream_as_a_second_layer(seeded_client):
    values, findings = (query(seeded_client, sql)
                        for sql in chart_queries(CHARTS["charts/feature_series_with_findings.yaml"]))
    # eth's NaN bar is left out; a feature row never counts as a finding, nor a finding as a value.
    assert values == [
        (T0, "btc", "price", 0.0), (T0, "btc", "volume", 10.0), (T0, "eth", "price", 1.0),
        (at(60), "btc", "price", 1.0), (at(60), "btc", "volume", 9.0), (at(60), "eth", "price", 3.0),
        (at(120), "btc", "price", 2.0), (at(120), "btc", "volume", 6.0),
        (at(180), "btc", "price", 3.0), (at(180), "btc", "volume", 1.0),
    ]
    # p2 is on btc and news; p2 and p3 share news's minute 1.
    assert findings == [
        (T0, "btc", "concept_drift", 1), (at(60), "btc", "anomaly", 1), (at(60), "news", "anomaly", 2),
        (at(120), "news", "freq_pattern", 1), (at(360), "news", "freq_pattern", 1),
    ]


def test_frequent_patterns_show_each_itemset_with_its_mean_support_and_lift(seeded_client):
    assert chart_rows(seeded_client, "frequent_patterns_support_lift") == [
        ("approval & etf", "news", 2, pytest.approx(0.30), pytest.approx(2.5), 5.0),
    ]


def test_pattern_lifetime_runs_from_first_to_last_finding_of_a_type_stream_and_subject(seeded_client):
    sql = f"SELECT * FROM {virtual('qraft_pattern_lifetime')} ORDER BY type, stream, subject"
    assert query(seeded_client, sql) == [
        ("anomaly", "btc", "price", at(70), at(70), 0, 1, pytest.approx(0.6)),
        ("anomaly", "news", "price", at(70), at(80), 10, 2, pytest.approx(0.65)),
        ("concept_drift", "btc", "price", at(30), at(30), 0, 1, pytest.approx(0.9)),
        ("freq_pattern", "news", "approval & etf", at(150), at(400), 250, 2, pytest.approx(0.7)),
    ]
    assert chart_rows(seeded_client, "pattern_lifetime_by_type") == [
        ("anomaly", 2, 5.0, 10), ("concept_drift", 1, 0.0, 0), ("freq_pattern", 1, 250.0, 250),
    ]


def test_the_projection_puts_two_features_on_the_axes_and_one_on_x(seeded_client):
    # Star coordinates: btc's price (first by name) along x, volume along y, as z-scores over
    # the stream; eth's only feature along x. News has items only and no point.
    sd_price, sd_volume = math.sqrt(1.25), 3.5
    expected = [(T0, "btc", -1.5 / sd_price, 3.5 / sd_volume), (T0, "eth", -1.0, 0.0),
                (at(60), "btc", -0.5 / sd_price, 2.5 / sd_volume), (at(60), "eth", 1.0, 0.0),
                (at(120), "btc", 0.5 / sd_price, -0.5 / sd_volume), (at(180), "btc", 1.5 / sd_price, -5.5 / sd_volume)]
    assert chart_rows(seeded_client, "feature_projection_scatter") == [
        (time, stream, pytest.approx(x, abs=1e-9), pytest.approx(y, abs=1e-9), 3) for time, stream, x, y in expected
    ]


def test_superset_holds_the_embedded_store_lock_only_while_a_connection_is_open(config_dir, tmp_path, monkeypatch):
    dsn = load_qraft_config(config_dir).store_dsn
    open_store(dsn, lock_timeout_s=30)  # migrated, then closed: nobody holds the store
    (tmp_path / "secret_key").write_text("test")
    monkeypatch.setenv("QRAFT_SUPERSET_HOME", str(tmp_path))
    monkeypatch.setenv("QRAFT_STORE_LOCK", lock_path_of(dsn))
    loader = importlib.util.spec_from_file_location("qraft_superset_config", SUPERSET_ENV / "superset_config.py")
    assert loader and loader.loader
    superset_config = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(superset_config)
    try:
        # Superset opens every query's connection from a NullPool and closes it after.
        engine = sqlalchemy.create_engine(launch_uri(config_dir), poolclass=sqlalchemy.pool.NullPool)
        assert not lock_held(lock_path_of(dsn))
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count() FROM pattern_events FINAL").scalar() == 0
            assert lock_held(lock_path_of(dsn))
        assert not lock_held(lock_path_of(dsn))
    finally:
        # The listeners are global to SQLAlchemy: leave none behind for other tests.
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "do_connect", superset_config._lock_before_connect)
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "close", superset_config._unlock_after_close)


# -- Prometheus metric names in Grafana and the alert rules ------------------------------------

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}
TARGET_LABELS = {"job", "instance", "component"}


def exposed_metrics() -> dict[str, set[str]]:
    """Every series name the processes expose, with the labels it carries."""
    found: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            (family,) = collector.describe()
            labels = set(collector._labelnames)
            for suffix in SUFFIXES[family.type]:
                found[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    # The pipeline collectors (the API's /metrics and qraft_dagster.monitoring) declare their families.
    for name, (_help, labels) in monitoring.FAMILIES.items():
        found[name] = set(labels)
    for name, (kind, _help, labels) in dagster_monitoring.FAMILIES.items():
        found[name + ("_total" if kind == "counter" else "")] = set(labels)
    return found


EXPOSED = exposed_metrics()
METRIC_NAME = re.compile(r"\b(qraft_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(qraft_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
AGGREGATION = re.compile(r"\b(?:sum|min|max|avg|count|stddev|stdvar|topk|bottomk|quantile|group)\s*\(")


def result_labels(expr: str) -> set[str]:
    """Labels a PromQL expression's result can carry, with the checks the metric names must pass."""
    names = set(METRIC_NAME.findall(expr))
    assert names <= set(EXPOSED), (expr, names - set(EXPOSED))
    available = TARGET_LABELS.union(*(EXPOSED[n] for n in names))
    for name, matchers in SELECTOR.findall(expr):
        assert set(MATCHER.findall(matchers)) <= EXPOSED[name] | TARGET_LABELS, (expr, name)
    grouped = [{label.strip() for label in group.split(",") if label.strip()}
               for group in GROUPING.findall(expr)]
    for labels in grouped:
        assert labels <= available, (expr, labels - available)
    if grouped:
        return set.union(*grouped)
    return set() if AGGREGATION.search(expr) else available


def grafana_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(GRAFANA.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_grafana_panels_use_exposed_metrics_and_legends_name_result_labels():
    used: set[str] = set()
    for title, target in grafana_targets():
        labels = result_labels(target["expr"])
        assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"])) <= labels, title
        used |= set(METRIC_NAME.findall(target["expr"]))
    # Every series the processes expose has a panel.
    assert used == {n for n in EXPOSED if not n.endswith("_created")}


def test_grafana_dashboard_is_parameterised_by_datasource_and_its_panels_do_not_overlap():
    dashboard = json.loads(GRAFANA.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    result_labels(variables["source"]["query"]["query"])
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        area = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & area, panel["title"]
        cells |= area


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def test_alert_rules_use_exposed_metrics_and_annotate_with_result_labels():
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "QraftConsumerLagGrowing", "QraftDeadLetterRatioHigh", "QraftNoEventsLanded", "QraftStoreRetries",
        "QraftAdapterReconnectStorm", "QraftAdapterLagHigh", "QraftWindowsBehind", "QraftRunsFailed",
        "QraftRunsQueuedUp", "QraftFindingsStorm", "QraftDetectionSlow", "QraftDetectorSlow", "QraftReplayFailed",
    }
    # The slow-detector alert fires once per detector and names it.
    (slow_detector,) = [r for r in rules if r["alert"] == "QraftDetectorSlow"]
    assert result_labels(slow_detector["expr"]) == {"detector"}
    assert "$labels.detector" in slow_detector["annotations"]["summary"]
    for rule in rules:
        labels = result_labels(rule["expr"])
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        for text in rule["annotations"].values():
            assert set(re.findall(r"\$labels\.(\w+)", text)) <= labels, rule["alert"]


def test_scrape_targets_are_the_processes_default_metrics_ports():
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert [(PROMETHEUS / f).is_file() for f in config["rule_files"]] == [True]
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    adapter_port = next(p.default for p in sources_run.params if p.name == "metrics_port")
    assert targets == {"qraft-lander": [f"127.0.0.1:{LanderConfig().metrics_port}"],
                       "qraft-adapters": [f"127.0.0.1:{adapter_port}"],
                       "qraft-api": [f"127.0.0.1:{ApiConfig().port}"],
                       "qraft-dagster": [f"127.0.0.1:{dagster_monitoring.DEFAULT_PORT}"]}
    (alerting,) = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


def test_alertmanager_routes_every_alert_to_the_webhook_read_from_a_file_kept_out_of_git():
    config = load_yaml(ALERTMANAGER / "alertmanager.yml")
    receivers = {r["name"]: r for r in config["receivers"]}
    routes = [config["route"], *config["route"]["routes"]]
    assert {route["receiver"] for route in routes} <= set(receivers)
    (webhook,) = receivers["qraft-webhook"]["webhook_configs"]
    assert webhook["url_file"] == "webhook_url"
    assert "webhook_url" in (ALERTMANAGER / ".gitignore").read_text().split()
    # Grouping and inhibition name labels the rules' alerts carry.
    rule_labels = {"alertname", "severity", "job", "instance", "component", "source", "type", "status"}
    assert set(config["route"]["group_by"]) <= rule_labels
    for rule in config["inhibit_rules"]:
        assert set(rule["equal"]) <= rule_labels
    alerts = {r["alert"] for r in alert_rules()}
    matched = [m for route in config["route"]["routes"] for m in route["matchers"]]
    matched += [m for rule in config["inhibit_rules"] for m in rule["source_matchers"] + rule["target_matchers"]]
    for matcher in matched:
        label, value = re.fullmatch(r'(\w+)="([^"]*)"', matcher).groups()
        assert label in rule_labels and (label != "alertname" or value in alerts), matcher


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_config_and_the_rules():
    subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=PROMETHEUS, check=True)
    subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=PROMETHEUS, check=True)


def amtool_version() -> tuple[int, ...]:
    if shutil.which("amtool") is None:
        return ()
    output = subprocess.run(["amtool", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"version (\d+)\.(\d+)", output)
    return tuple(map(int, found.groups())) if found else ()


# The webhook's url_file came with Alertmanager 0.26; older amtools reject it.
@pytest.mark.skipif(amtool_version() < (0, 26), reason="amtool 0.26 or later is not installed")
def test_amtool_accepts_the_alertmanager_config(tmp_path):
    shutil.copy(ALERTMANAGER / "alertmanager.yml", tmp_path)
    (tmp_path / "webhook_url").write_text("http://127.0.0.1:9/hook")
    subprocess.run(["amtool", "check-config", "alertmanager.yml"], cwd=tmp_path, check=True)
