"""How Qraft's time-window partitions are built from `partitions` in qraft.yaml.

The definitions are built from a configuration object (`build_definitions`); nothing here
reads configuration at import. The range is `start` to `end` as configured: a bounded
dataset (a replayed file, the demo) declares its own end, so every partition has data.

Windows are `partitions.interval_minutes` long (1 minute for the demo). With
an open end, only the newest `max_partitions` windows exist: Dagster's UI gets
slow past a few tens of thousands of partitions (30,000 one-minute windows are
about 20 days), and older windows stay in the tables, replayable through the
CLI. The start of that rolling range moves in whole days, so the partition set
is stable for a day at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import TimeWindowPartitionsDefinition

from qraft_core.config import ConfigError, PartitionsConfig
from qraft_core.scheduling import partition_start

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def cron_for(interval_minutes: int) -> str:
    """The cron schedule of windows of this length.

    >>> cron_for(1), cron_for(15), cron_for(120), cron_for(1440)
    ('* * * * *', '*/15 * * * *', '0 */2 * * *', '0 0 * * *')
    """
    if interval_minutes < 60 and 60 % interval_minutes == 0:
        return "* * * * *" if interval_minutes == 1 else f"*/{interval_minutes} * * * *"
    if interval_minutes % 60 == 0 and 24 % (interval_minutes // 60) == 0:
        hours = interval_minutes // 60
        # Daily windows are midnight's; `*/24` is out of cron's range (Dagster warns on every load).
        return {1: "0 * * * *", 24: "0 0 * * *"}.get(hours, f"0 */{hours} * * *")
    raise ConfigError(
        f"qraft.yaml: partitions.interval_minutes: expected a divisor of 60 or a whole number of hours "
        f"dividing 24 (got {interval_minutes})"
    )


def build_partitions(config: PartitionsConfig, now: datetime | None = None) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        cron_schedule=cron_for(config.interval_minutes),
        start=partition_start(config, now),
        end=config.end,
        fmt=PARTITION_FORMAT,
        timezone="UTC",
    )


def partition_key(window_start: datetime) -> str:
    return window_start.astimezone(UTC).strftime(PARTITION_FORMAT)


def window_of(key: str) -> datetime:
    return datetime.strptime(key, PARTITION_FORMAT).replace(tzinfo=UTC)
