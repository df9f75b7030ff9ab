"""The table specs' partition keys are the store's, and an insert spanning decades lands whole,
in the partitions ClickHouse computes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from qraft_core.store import ClickHouseStore
from qraft_core.store.schema import TABLES, spec

T0 = datetime(1965, 1, 1, tzinfo=UTC)


def decades_of_times(seed: int, count: int) -> list[datetime]:
    """Seeded times from 1965 to 2030, with the edges where a partition starts or ends."""
    rng = random.Random(seed)
    times = [T0 + timedelta(milliseconds=rng.randrange(65 * 365 * 86_400_000)) for _ in range(count)]
    edges = [datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
             datetime(2024, 2, 29, 23, 59, 59, 999_000, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)]
    return times + edges


def rows(table: str, times: list[datetime]) -> pl.DataFrame:
    """Rows of the table with these times in every time column, the other columns empty."""
    columns = {}
    for name, dtype in spec(table).frame_schema.items():
        if isinstance(dtype, pl.Datetime):
            columns[name] = pl.Series(name, times, dtype)
        elif isinstance(dtype, pl.List):
            columns[name] = pl.Series(name, [[] for _ in times], dtype)
        elif dtype == pl.Utf8:
            columns[name] = pl.Series(name, [""] * len(times), dtype)
        else:
            columns[name] = pl.Series(name, [0] * len(times)).cast(dtype)
    # Distinct ids: ReplacingMergeTree tables would collapse rows with one sort key on a merge.
    id_column = next(iter(spec(table).columns))
    if spec(table).frame_schema[id_column] == pl.Utf8:
        columns[id_column] = pl.Series(id_column, [f"r{i}" for i in range(len(times))], pl.Utf8)
    return pl.DataFrame(columns)


def stored_partitions(store: ClickHouseStore, table: str) -> dict[str, int]:
    with store.session():
        found = store._client.query(  # noqa: SLF001 - the parts the store wrote
            "SELECT partition, sum(rows) FROM system.parts WHERE database = currentDatabase() AND active "
            "AND table = {table:String} GROUP BY partition", parameters={"table": table}).result_rows
    return {str(partition): int(count) for partition, count in found}


def test_every_spec_declares_the_partition_key_of_its_table(chdb_store):
    with chdb_store.session():
        found = dict(chdb_store._client.query(  # noqa: SLF001 - the tables as created
            "SELECT name, partition_key FROM system.tables WHERE database = currentDatabase()").result_rows)
    assert {name: table.partition_by or "" for name, table in TABLES.items()} == {name: found[name] for name in TABLES}
    assert sum(1 for table in TABLES.values() if table.partition_by) == 7


@pytest.mark.parametrize(("table", "count", "partitions"), [("raw_events", 400, 399), ("features", 1500, 658)])
def test_an_insert_spanning_decades_lands_in_the_partitions_polars_computes(chdb_store, table, count, partitions):
    frame = rows(table, decades_of_times(7, count))
    key = spec(table).partition_key
    assert key is not None
    computed = dict(frame.group_by(key.value()).len().iter_rows())
    assert len(computed) == partitions  # more than one insert block takes
    assert chdb_store.insert(table, frame) == frame.height
    assert stored_partitions(chdb_store, table) == {str(partition): n for partition, n in computed.items()}


def test_clickhouse_refuses_the_same_frame_in_one_block(chdb_store):
    # What the store's split avoids: without it the insert above fails.
    frame = rows("raw_events", decades_of_times(7, 400))
    with chdb_store.session(), pytest.raises(Exception, match="TOO_MANY_PARTS"):
        chdb_store._client.insert_arrow("raw_events", frame.to_arrow())  # noqa: SLF001 - one block, unsplit
