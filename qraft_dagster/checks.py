"""Asset checks of the pipeline, evaluated by the assets on the windows their run materialized.

Every check warns (severity WARN) rather than fails the run: a run that dead-lettered a bad
batch still produced correct windows, and the sensor's re-runs must not be blocked by them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

# Occasional malformed ticks are normal on any feed; beyond one event in twenty rejected, a
# parser or a source changed its format, which a person should look at.
MAX_DEAD_LETTER_RATIO = 0.05

CLEAN_CHECKS = [
    AssetCheckSpec("dead_letter_ratio", asset="clean_events",
                   description=f"At most {MAX_DEAD_LETTER_RATIO:.0%} of the run's raw events were dead-lettered."),
    AssetCheckSpec("no_rejected_windows", asset="clean_events",
                   description="Every window with raw events kept some of them (a window of only rejects is "
                               "told apart from a window without data)."),
]
DETECTOR_CHECKS = [
    AssetCheckSpec("detector_health", asset="detections",
                   description="Detectors continued from the previous window's state: none restarted after a "
                               "configuration change, no state had to be rebuilt after a failed run, none "
                               "raised on a stream's bars."),
]
FRESHNESS_CHECKS = [
    AssetCheckSpec("freshness", asset="explanation_cards",
                   description="The newest finished window is at most one run (max_windows_per_run windows) "
                               "behind the newest landed event."),
]


def _result(name: str, passed: bool, metadata: dict[str, Any]) -> AssetCheckResult:
    return AssetCheckResult(check_name=name, passed=passed, severity=AssetCheckSeverity.WARN, metadata=metadata)


def clean_check_results(counts: dict[str, dict[str, int]], windows: list[str]) -> list[AssetCheckResult]:
    """From per-window counts of raw_events, clean_events and dead_letters over the run's windows."""
    raw = sum(counts["raw_events"].get(key, 0) for key in windows)
    letters = sum(counts["dead_letters"].get(key, 0) for key in windows)
    ratio = letters / raw if raw else 0.0
    rejected = [key for key in windows if counts["raw_events"].get(key, 0) and not counts["clean_events"].get(key, 0)]
    return [
        _result("dead_letter_ratio", ratio <= MAX_DEAD_LETTER_RATIO,
                {"ratio": round(ratio, 6), "dead_letters": letters, "raw_events": raw,
                 "limit": MAX_DEAD_LETTER_RATIO}),
        _result("no_rejected_windows", not rejected,
                {"windows": len(windows), "windows_all_rejected": len(rejected), "first": ", ".join(rejected[:10])}),
    ]


def detector_check_results(result: dict[str, Any]) -> list[AssetCheckResult]:
    """From `materialize_detections`' result (plus `rebuilt_from` when the state was rebuilt)."""
    restarted = list(result.get("restarted") or [])
    rebuilt = str(result.get("rebuilt_from", ""))
    failed = dict(result.get("detector_first_failure") or {})
    return [_result("detector_health", not restarted and not rebuilt and not failed,
                    {"restarted": ", ".join(restarted), "rebuilt_from": rebuilt,
                     "failed": "; ".join(f"{name} on {error}" for name, error in sorted(failed.items())),
                     "detectors": len(result.get("signals_by_detector") or {})})]


def freshness_check_results(
    newest_window_end: datetime, newest_event: datetime | None, interval: timedelta, max_windows_per_run: int
) -> list[AssetCheckResult]:
    """Windows between the newest finished window and the newest landed event."""
    behind = 0 if newest_event is None else max(int((newest_event - newest_window_end) / interval), 0)
    return [_result("freshness", behind <= max_windows_per_run,
                    {"windows_behind": behind, "limit": max_windows_per_run})]
