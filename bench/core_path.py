"""The qraft_core calls the pipeline assets make, without Dagster: the baseline of the replay benches."""

from __future__ import annotations

from datetime import datetime

from qraft_core.runtime import Runtime


def core_calls(rt: Runtime, start: datetime, end: datetime, cards: bool = True) -> None:
    """Clean, features, detections, pattern events and (with `cards`) cards over [start, end), chunk by
    chunk of `max_windows_per_run` windows as the ranged runs cut it; the store stays open between the
    steps as it does for the assets."""
    from qraft_core.clean import clean_windows
    from qraft_core.detectors.config import load_detectors
    from qraft_core.detectors.runner import materialize_detections
    from qraft_core.explain.materialize import materialize_cards
    from qraft_core.explain.templates import load_cards_config
    from qraft_core.features import materialize_features
    from qraft_core.operators.pipeline import load_preprocessing
    from qraft_core.patterns.materialize import materialize_patterns
    from qraft_core.scheduling import partition_start

    store = rt.store.keep_open_between_steps()
    partitions = rt.config.partitions
    preprocessing, detectors = load_preprocessing(rt.config_path), load_detectors(rt.config_path)
    cards_config = load_cards_config(rt.config_path) if cards else None
    step = partitions.interval * partitions.max_windows_per_run
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + step, end)
        clean_windows(store, cursor, chunk_end, partitions.interval, rt.config.clean)
        materialize_features(store, preprocessing, cursor, chunk_end, partitions.interval)
        materialize_detections(store, detectors, cursor, chunk_end, partitions.interval,
                               partition_start(partitions), None)
        materialize_patterns(store, detectors, cursor, chunk_end, partitions.interval, preprocessing=preprocessing)
        if cards_config is not None:
            materialize_cards(store, rt.config, cards_config, cursor, chunk_end, preprocessing=preprocessing)
        cursor = chunk_end


def close_store() -> None:
    """Close the embedded engine kept open between steps, before its temporary data directory goes."""
    from qraft_core.store.sessions import ENGINE

    ENGINE.close()
