"""Long spans in one write and one run: the store's insert blocks, and the metadata of a run of
many partitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from dagster import BackfillPolicy, DagsterInstance, asset, materialize

from qraft_core.config import PartitionsConfig
from qraft_core.store.clickhouse import MAX_PARTITIONS_PER_INSERT, insert_blocks
from qraft_core.store.schema import spec
from qraft_core.store.table_spec import TS, TableSpec
from qraft_dagster.assets.metadata import add_partition_metadata, run_windows
from qraft_dagster.partitions import build_partitions

T0 = datetime(1995, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
# Partitions of the one run whose metadata is checked (Dagster records an event for each).
RUN_DAYS = 200


def thirty_years(seed: int) -> pl.DataFrame:
    """Seeded times over thirty years, one or two a day, shuffled."""
    rng = random.Random(seed)
    times = [T0 + DAY * d + timedelta(milliseconds=rng.randrange(86_400_000))
             for d in range(10_958) for _ in range(rng.choice((1, 2)))]
    rng.shuffle(times)
    return pl.DataFrame({"timestamp": pl.Series(times, dtype=pl.Datetime("ms", "UTC")), "n": range(len(times))})


def test_a_batch_within_a_hundred_partitions_is_inserted_as_it_is():
    days = thirty_years(1)
    hundred_days = days.filter(pl.col("timestamp") < T0 + DAY * 100)
    assert insert_blocks(hundred_days, spec("raw_events"))[0] is hundred_days
    assert len(insert_blocks(days.filter(pl.col("timestamp") < T0 + DAY * 101), spec("raw_events"))) == 2
    months = days.rename({"timestamp": "bar_time"})
    hundred_months = months.filter(pl.col("bar_time") < datetime(2003, 5, 1, tzinfo=UTC))  # January 1995 to April 2003
    assert insert_blocks(hundred_months, spec("features"))[0] is hundred_months
    assert len(insert_blocks(months.filter(pl.col("bar_time") < datetime(2003, 6, 1, tzinfo=UTC)), spec("features"))) == 2


def test_thirty_years_go_in_blocks_of_whole_partitions_at_most_a_hundred_each():
    frame = thirty_years(2)
    key = spec("raw_events").partition_key
    assert key is not None
    blocks = insert_blocks(frame, spec("raw_events"))
    partitions = [set(block.select(key.value()).to_series()) for block in blocks]
    # 10,958 days: 109 full blocks and the rest.
    assert sorted(len(p) for p in partitions) == [58] + [MAX_PARTITIONS_PER_INSERT] * 109
    assert sum(len(p) for p in partitions) == len(set().union(*partitions))  # no partition in two blocks
    assert len(set().union(*partitions)) == frame.select(key.value()).n_unique()
    assert pl.concat(blocks).sort("n").equals(frame.sort("n"))


def test_a_spec_cannot_declare_a_partition_key_the_store_cannot_compute():
    with pytest.raises(ValueError, match="unsupported partition key 'toStartOfWeek\\(ts\\)'"):
        TableSpec("t", {"ts": TS}, partition_by="toStartOfWeek(ts)")
    with pytest.raises(ValueError, match="partition column 'name' is not a DateTime64"):
        TableSpec("t", {"name": "String"}, partition_by="toYYYYMM(name)")


def test_a_run_of_many_partitions_gets_each_its_own_metadata():
    partitions = build_partitions(PartitionsConfig(interval_minutes=1440, start=T0, end=T0 + DAY * RUN_DAYS))
    keys = partitions.get_partition_keys()

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run())
    def history(context) -> None:  # unannotated: Dagster cannot read a postponed annotation
        windows = run_windows(context, DAY)
        context.add_asset_metadata({"first": True}, partition_key=windows.keys[0])
        add_partition_metadata(context, windows, {key: {"n": n} for n, key in enumerate(windows.keys)})
        with pytest.raises(ValueError, match="partitions this run does not target: 2030-01-01-00:00"):
            add_partition_metadata(context, windows, {"2030-01-01-00:00": {"n": -1}})

    instance = DagsterInstance.ephemeral()
    result = materialize([history], instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    found = {m.partition: m.metadata for m in result.asset_materializations_for_node("history")}
    assert len(found) == RUN_DAYS
    assert {k: v["n"].value for k, v in found.items()} == {key: n for n, key in enumerate(keys)}
    assert found[keys[0]]["first"].value is True and "first" not in found[keys[1]]
