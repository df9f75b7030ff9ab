"""Definitions built from a configuration object: no import-time reads, the lineage, one Runtime per process,
and the whole job on the fake (in-memory) resource."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from qraft_core.config import ConfigError, load_qraft_config
from qraft_core.lander import land_batch

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _trades(n: int, step_s: float, bad: frozenset[int] = frozenset()) -> bytes:
    return "\n".join(json.dumps({
        "event_id": f"e{i}", "source": "binance_spot", "type": "trade",
        "timestamp": (T0 + timedelta(seconds=i * step_s)).isoformat(),
        "ingest_time": (T0 + timedelta(seconds=i * step_s)).isoformat(),
        "payload": {"s": "BTCUSDT", "p": "x" if i in bad else str(100 + i % 7), "q": "0.5", "m": bool(i % 2)},
        "meta": {"parser_version": "test/1"},
    }) for i in range(n)).encode()


def test_importing_the_code_location_reads_no_configuration(tmp_path):
    missing = tmp_path / "nowhere"
    probe = (
        "import qraft_dagster.definitions as d\n"
        "try:\n    d.defs()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env={"QRAFT_CONFIG_DIR": str(missing), "PATH": ""},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ConfigError {missing / 'qraft.yaml'}: file not found (Dagster's partitions, " \
        "store and sensor are configured there; set QRAFT_CONFIG_DIR to the folder holding it)"


def test_definitions_follow_the_configuration_object(config_dir):
    from qraft_dagster.definitions import build_definitions

    config = load_qraft_config(config_dir).model_copy(deep=True)
    config.partitions.interval_minutes = 15
    config.partitions.end = T0 + timedelta(hours=2)
    defs = build_definitions(config_dir, config)
    job = defs.resolve_job_def("qraft_pipeline")
    assert job.partitions_def.get_partition_keys()[:2] == ["2026-01-05-00:00", "2026-01-05-00:15"]
    assert len(job.partitions_def.get_partition_keys()) == 8
    assert job.executor_def.name == "in_process"
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("raw_events")).parent_keys == {AssetKey(["nats", "QRAFT_RAW"])}
    assert graph.get(AssetKey(["nats", "QRAFT_RAW"])).parent_keys == {
        AssetKey(["sources", "binance_spot"]), AssetKey(["sources", "news"])}
    assert {c.name for c in graph.asset_check_keys} == {
        "dead_letter_ratio", "no_rejected_windows", "detector_health", "freshness"}


def test_the_bundled_demo_configuration_has_one_partition_per_window_of_data():
    from qraft_dagster.definitions import build_definitions

    defs = build_definitions("config")
    keys = defs.resolve_job_def("qraft_pipeline").partitions_def.get_partition_keys()
    assert (len(keys), keys[0], keys[-1]) == (180, "2026-01-05-00:00", "2026-01-05-02:59")


def test_the_resource_loads_the_runtime_once_per_process(config_dir):
    from qraft_dagster.resources import QraftResource

    first = QraftResource(config_dir=str(config_dir)).runtime
    assert QraftResource(config_dir=str(config_dir)).runtime is first
    with pytest.raises(ConfigError, match="qraft.yaml: file not found"):
        QraftResource(config_dir=str(config_dir / "missing")).runtime  # noqa: B018


def test_the_job_runs_on_the_fake_resource_with_per_window_metadata(config_dir):
    """clean_events and features over 3 windows in one run on the in-memory store (the detectors run on chDB
    in test_pipeline_metadata.py)."""
    from qraft_dagster.definitions import build_definitions
    from qraft_dagster.resources import MemoryQraftResource

    qraft = MemoryQraftResource(config_dir=str(config_dir))
    store = qraft.runtime.store
    # 150 trades 1.5 s apart: 40 in each of the first three one-minute windows; the 8th has no readable price.
    store.insert("raw_events", land_batch([("qraft.raw.binance_spot", _trades(150, 1.5, frozenset({7})))]).raw_events)
    defs = build_definitions(config_dir, qraft=qraft)
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [defs.resolve_assets_def(AssetKey(name)) for name in ("clean_events", "features")],
        instance=instance,
        tags={"dagster/asset_partition_range_start": "2026-01-05-00:00",
              "dagster/asset_partition_range_end": "2026-01-05-00:02"},
    )
    assert result.success
    assert store.count("clean_events") == {"": 119}
    clean = {r.partition_key: r.asset_materialization.metadata
             for r in instance.fetch_materializations(AssetKey("clean_events"), limit=10).records}
    assert {key: (m["raw_events"].value, m["clean_events"].value, m["dead_letters"].value)
            for key, m in clean.items()} == {
        "2026-01-05-00:00": (40, 39, 1), "2026-01-05-00:01": (40, 40, 0), "2026-01-05-00:02": (40, 40, 0)}
    assert clean["2026-01-05-00:01"]["run_summary"].value["clean_events"] == 119
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"dead_letter_ratio": True, "no_rejected_windows": True}


def test_every_job_runs_in_one_process(config_dir):
    """The pipeline job and the implicit asset job the UI's backfills use (one process per run, not per step)."""
    from qraft_dagster.definitions import build_definitions

    defs = build_definitions(config_dir)
    assert defs.resolve_job_def("qraft_pipeline").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_changed_overrides_in_the_process_get_their_own_runtime(config_dir, tmp_path, monkeypatch):
    from qraft_dagster.resources import QraftResource

    resource = QraftResource(config_dir=str(config_dir))
    first = resource.runtime
    monkeypatch.setenv("QRAFT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert resource.runtime is not first
    assert resource.runtime.data_dir == tmp_path / "elsewhere"


@pytest.mark.parametrize("minutes", [1, 15, 120, 1440])
def test_the_windows_of_a_run_are_the_partition_keys_of_its_range(minutes):
    """The keys the assets put metadata under are Dagster's keys of the run's range, for every window length
    `partitions.interval_minutes` accepts (a range across a month end and a year end)."""
    from dagster import PartitionKeyRange

    from qraft_core.config import PartitionsConfig
    from qraft_dagster.assets.metadata import windows_between
    from qraft_dagster.partitions import build_partitions, window_of

    config = PartitionsConfig(interval_minutes=minutes, start="2025-12-30T00:00:00Z", end="2026-01-03T00:00:00Z")
    partitions = build_partitions(config)
    keys = partitions.get_partition_keys()
    first, last = keys[1], keys[-2]
    expected = partitions.get_partition_keys_in_range(PartitionKeyRange(first, last))
    windows = windows_between(window_of(first), window_of(last) + config.interval, config.interval)
    assert windows.keys == expected
    assert len(expected) == {1: 5758, 15: 382, 120: 46, 1440: 2}[minutes]
