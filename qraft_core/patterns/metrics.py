"""Metric sets: which feature columns a pattern event's metric changes are measured on.

A metric set maps the columns present in a stream's bars to
`{metric name: (column, unit)}`. Units: "relative" (mean after / mean before
- 1, 0.37 = +37%), "pp" (difference of a ratio, in percentage points), "delta"
(mean after - mean before, in the field's own unit: right for values of any
sign). The generic set reads every field's bar mean (`F_mean`, else `F_last`)
and names the metric after the field itself; plugins register their own sets
(the markets plugin names volatility, volume, ...), checked first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from qraft_core.registry import Registry, control_character

log = logging.getLogger(__name__)

Metrics = dict[str, tuple[str, str]]
MetricSet = Callable[[Sequence[str]], Metrics]
# Plugins' metric sets by name, consulted in registration order before the generic one.
METRIC_SETS: Registry[MetricSet] = Registry("metric set")
register_metric_set = METRIC_SETS.register
LEVEL_SUFFIXES = ("_mean", "_last")


def field_levels(columns: Sequence[str]) -> Metrics:
    """Each field's level column: `F_mean`, or `F_last` when the bars have no mean.

    >>> field_levels(["event_count", "value_mean", "value_max", "load_last", "load_std"])
    {'load': ('load_last', 'delta'), 'value': ('value_mean', 'delta')}
    """
    found: Metrics = {}
    for suffix in reversed(LEVEL_SUFFIXES):  # the preferred suffix is written last and wins
        for column in columns:
            if column.endswith(suffix) and len(column) > len(suffix):
                found[column[: -len(suffix)]] = (column, "delta")
    return dict(sorted(found.items()))


def metrics_for(columns: Sequence[str]) -> Metrics:
    """Every registered set's metrics over `columns`, plugin sets first (a name is taken once).

    A plugin's metric named with a control character (a newline would start a line of its own in a
    card) is left out, and logged naming the set and the metric.
    """
    merged: Metrics = {}
    for set_name, metric_set in [*METRIC_SETS.items(), ("generic", field_levels)]:
        for name, spec in metric_set(columns).items():
            found = control_character(name) if metric_set is not field_levels else None
            if found is not None:
                log.warning("metric set %s: metric %r is left out: its name holds control character %s",
                            set_name, name, found)
                continue
            merged.setdefault(name, spec)
    return merged
