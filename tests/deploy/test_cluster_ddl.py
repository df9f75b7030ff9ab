"""The cluster schema generated from the bundled migrations (`store.cluster`), and retention TTLs.

No ClickHouse cluster can run here (Debian's clickhouse-server is 18.16, older than DateTime64),
so the DDL is checked as text; tests/integration/test_lifecycle_retention.py runs the
single-server form with TTLs on embedded ClickHouse.
"""

import pytest

from qraft_core.config import ConfigError, load_qraft_config
from qraft_core.store.clickhouse import _statements, migration_files
from qraft_core.store.cluster import (
    ClusterSchemaError,
    StoreLayout,
    delete_statement,
    layout_statements,
    retention_statements,
)

CLUSTER = StoreLayout("qraft", {"raw_events": 90, "dead_letters": 30}, {"news": 7})
ALL_STATEMENTS = [s for _, _, sql in migration_files() for s in _statements(sql)]

RAW_EVENTS_ENGINE = """\
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', landed_at)
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (source, timestamp, event_id)
TTL landed_at + toIntervalDay(multiIf(source = 'news', 7, 90))"""

RAW_EVENTS_DISTRIBUTED = (
    "CREATE TABLE IF NOT EXISTS raw_events ON CLUSTER qraft AS raw_events_local "
    "ENGINE = Distributed(qraft, currentDatabase(), raw_events_local, cityHash64(source, timestamp, event_id))"
)


def test_each_table_becomes_a_replicated_local_table_and_a_distributed_one():
    generated = layout_statements(ALL_STATEMENTS, CLUSTER)
    columns = ALL_STATEMENTS[0].split("(", 1)[1].rsplit(") ENGINE", 1)[0]
    assert generated[:2] == [
        f"CREATE TABLE IF NOT EXISTS raw_events_local ON CLUSTER qraft ({columns}{RAW_EVENTS_ENGINE}",
        RAW_EVENTS_DISTRIBUTED,
    ]
    assert len(generated) == 2 * len(ALL_STATEMENTS)
    for local, distributed in zip(generated[::2], generated[1::2], strict=True):
        assert " ON CLUSTER qraft (" in local and "ENGINE = Replicated" in local
        table = local.split()[5].removesuffix("_local")
        # Sharded on the sort key: every copy of a row lands on the shard that de-duplicates it.
        order_by = local.split("ORDER BY ")[1].split("\n")[0].strip("()")
        assert distributed.endswith(f"{table}_local, cityHash64({order_by}))")


def test_ttls_follow_the_retention_per_table_and_per_source():
    generated = {s.split()[5]: s for s in layout_statements(ALL_STATEMENTS, CLUSTER) if "_local ON" in s}
    assert generated["dead_letters_local"].endswith("ORDER BY (stage, letter_id)\nTTL received_at + toIntervalDay(30)")
    assert generated["clean_events_local"].endswith(
        "TTL ingest_time + toIntervalDay(multiIf(source = 'news', 7, 0)) DELETE WHERE source IN ('news')"
    )
    assert [name for name, sql in generated.items() if "TTL" not in sql] == [
        "audit_log_local", "source_registry_local", "pattern_events_local", "features_local",
        "pattern_cards_local", "annotations_local", "detections_local", "detector_state_local",
    ]
    assert retention_statements(CLUSTER, ["dead_letters", "annotations"]) == [
        "ALTER TABLE dead_letters_local ON CLUSTER qraft MODIFY TTL received_at + toIntervalDay(30) "
        "SETTINGS materialize_ttl_after_modify = 0"
    ]


def test_the_default_layout_keeps_the_migrations_as_written():
    assert [" ".join(s.split()) for s in layout_statements(ALL_STATEMENTS, StoreLayout())] == [
        " ".join(s.split()) for s in ALL_STATEMENTS
    ]


def test_window_deletes_reach_every_shard():
    assert delete_statement("clean_events", "WHERE x = 1", CLUSTER) == (
        "DELETE FROM clean_events_local ON CLUSTER qraft WHERE x = 1"
    )
    assert delete_statement("clean_events", "WHERE x = 1", StoreLayout()) == "DELETE FROM clean_events WHERE x = 1"


def test_a_statement_without_a_cluster_form_is_refused():
    with pytest.raises(ClusterSchemaError, match="no cluster form"):
        layout_statements(["DROP TABLE features"], CLUSTER)


# A value wrong in itself is blamed on the variable that set it; a combination that is wrong
# only together (a cluster without a dsn) on the file the rest of the store settings come from.
@pytest.mark.parametrize(("environ", "where", "message"), [
    ({"QRAFT_STORE_RETENTION_DAYS": "{raw_event: 3}"}, "$QRAFT_STORE_RETENTION_DAYS (environment)",
     "store.retention_days: Value error, 'raw_event' is not a table"),
    ({"QRAFT_STORE_RETENTION_DAYS": "{raw_events: 0}"}, "$QRAFT_STORE_RETENTION_DAYS (environment)",
     "expected at least 1 day"),
    ({"QRAFT_STORE_CLUSTER": "a;b"}, "$QRAFT_STORE_CLUSTER (environment)",
     "store.cluster: String should match pattern"),
    ({"QRAFT_STORE_CLUSTER": "qraft"}, "config/qraft.yaml", "store: Value error, cluster: a cluster needs dsn"),
])
def test_bad_store_settings_name_the_key(environ, where, message):
    with pytest.raises(ConfigError) as error:
        load_qraft_config("config", environ)
    assert str(error.value).startswith(where + ": ")
    assert message in str(error.value)
