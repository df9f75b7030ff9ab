"""Replaying a window range: claim it, recompute it, compare it with a golden file, record it.

One use case for every caller: `qraft replay`, the replay worker the API
starts, and tests. The pipeline itself runs through the injected
`PipelineRunner`; the claim keeps two replays from overlapping; the result
goes to the replay record, MLflow (an outage there is logged and skipped) and
the audit log.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from qraft_core.audit import record_audit
from qraft_core.clean import rejection_counts
from qraft_core.config import ConfigError, QraftConfig
from qraft_core.events import PatternEvent
from qraft_core.golden import (
    GoldenDiff,
    compare_golden,
    golden_document,
    golden_record,
    read_golden,
    write_golden,
)
from qraft_core.patterns.materialize import load_pattern_events
from qraft_core.replays import RUN_FAILURES, ReplayRecord, ReplayRegistry, replay_window
from qraft_core.services.pipeline import PipelineService
from qraft_core.store.base import EventStore, Filter
from qraft_core.tracking import Tracker, detector_seconds_metrics, library_versions

logger = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class _Collected(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def told_run_failures() -> Iterator[list[str]]:
    """The one-line failures the pipeline runner tells (on `RUN_FAILURES`) while the block runs."""
    lines: list[str] = []
    handler = _Collected(lines)
    teller = logging.getLogger(RUN_FAILURES)
    teller.addHandler(handler)
    try:
        yield lines
    finally:
        teller.removeHandler(handler)


@dataclass(frozen=True)
class ReplayRequest:
    """A replay of [start, end); `sources` narrows the summary and the golden comparison only."""

    start: datetime
    end: datetime
    sources: tuple[str, ...] = ()
    golden: Path | None = None
    write_golden: bool = False
    tolerance: float = 0.05
    actor: str = "cli"


@dataclass
class ReplayResult:
    record: ReplayRecord
    summary: dict[str, Any]
    diff: GoldenDiff | None = None

    @property
    def status(self) -> str:
        return self.record.status


def config_hash(config_path: Path) -> str:
    """A short digest of the configuration folder's YAML files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(config_path.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def replayed_patterns(store: EventStore, start: datetime, end: datetime, sources: list[str]) -> list[PatternEvent]:
    patterns = load_pattern_events(store, start, end)
    if sources:
        patterns = [p for p in patterns if any(s.split(":")[0] in sources for s in p.source_streams)]
    return patterns


def window_summary(store: EventStore, start: datetime, end: datetime, sources: list[str],
                   interval: timedelta) -> dict[str, Any]:
    """What the store holds for [start, end) of `sources` (all when empty) after a replay."""
    where = [Filter("source", "in", sources)] if sources else []
    with store.session():
        events = store.count("clean_events", start=start, end=end, where=where).get("", 0)
        letters = store.select("dead_letters", start=start, end=end, where=where, columns=["reason"])
    by_type: dict[str, int] = {}
    for pattern in replayed_patterns(store, start, end, sources):
        by_type[pattern.type.value] = by_type.get(pattern.type.value, 0) + 1
    return {
        "partitions": int((end - start) / interval),
        "events": events,
        "dead_letters": letters.height,
        # Why events were rejected: a window of rejects is told apart from a window without data.
        "dead_letters_by_reason": rejection_counts(letters),
        "pattern_events": sum(by_type.values()),
        "pattern_events_by_type": by_type,
        "no_data": events == 0,
    }


@dataclass
class ReplayService:
    config: QraftConfig
    config_path: Path
    store: EventStore
    registry: ReplayRegistry
    tracker: Tracker
    pipeline: PipelineService

    def window(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """[start, end) widened to whole windows; a ConfigError when outside the partitions."""
        return replay_window(start, end, self.config.partitions)

    def check(self, request: ReplayRequest) -> None:
        """Refuse a request that would fail after the work: a broken golden file, a bad window."""
        if request.write_golden and request.golden is None:
            raise ConfigError("replay: writing a golden file needs its path (--compare FILE)")
        if request.golden is not None and not request.write_golden:
            read_golden(request.golden)
        self.window(request.start, request.end)

    def claim(self, request: ReplayRequest, replay_id: str | None = None) -> ReplayRecord:
        """Register the replay (ReplayConflict when it overlaps a running one)."""
        start, end = self.window(request.start, request.end)
        return self.registry.claim(start, end, sorted(request.sources), replay_id)

    def run(self, request: ReplayRequest, replay_id: str | None = None,
            on_progress: Callable[[int], None] = lambda windows: None) -> ReplayResult:
        """Claim, recompute and record the replay; the record never stays "running" on an error.

        A failed replay's summary names the failing run, step and reason in one line (`error`) and holds
        no pattern counts: the store still holds the windows as they were before the replay.
        """
        self.check(request)
        self.pipeline.require_runner()
        record = self.claim(request, replay_id)
        start, end = self.window(request.start, request.end)
        sources = sorted(request.sources)
        summary: dict[str, Any] = {"id": record.id, "start": record.start, "end": record.end, "sources": sources,
                                   "partitions": int((end - start) / self.config.partitions.interval)}
        began = time.monotonic()
        try:
            with told_run_failures() as failures:
                outcome = self.pipeline.materialize(start, end, on_progress)
            summary |= {"runs": outcome.runs, "failed_runs": outcome.failed_runs,
                        "config_hash": config_hash(self.config_path), "detector_seconds": outcome.detector_seconds,
                        # A detector failing on a stream's window restarts there and the run goes on: said here,
                        # or a succeeded replay would hide the findings it lost.
                        "detector_failures": outcome.detector_failures,
                        "detector_first_failure": outcome.detector_first_failure}
            if outcome.failed_runs:
                status = "failed"
                summary["error"] = failures[0] if failures else (
                    f"pipeline run {outcome.failed_runs[0]} failed (Dagster's event log of the run tells why)")
            else:
                status = "succeeded"
                summary |= window_summary(self.store, start, end, sources, self.config.partitions.interval)
            summary["seconds"] = round(time.monotonic() - began, 2)
            diff = None
            if request.golden is not None and status == "succeeded":
                diff = self._golden(request, start, end, summary)
                status = "regression" if diff is not None and diff.regression else status
        except BaseException as exc:  # Ctrl-C included
            error = f"{type(exc).__name__}: {first_line(exc)}"
            self.registry.finish(record, "failed", {"error": error})
            self._audit_failure(record, request, error)
            raise
        summary["status"] = status
        self.registry.finish(record, status, summary)
        try:
            self._record(record, request, summary)
        except Exception as exc:
            if status != "failed":
                raise
            # The store may be why the run failed: its audit row must not hide the replay's own outcome.
            logger.warning("replay %s: its audit row was not written (%s: %s)", record.id, type(exc).__name__,
                           first_line(exc))
        return ReplayResult(record, summary, diff)

    def _golden(self, request: ReplayRequest, start: datetime, end: datetime,
                summary: dict[str, Any]) -> GoldenDiff | None:
        """Write the golden file, or compare with it (the difference goes into the summary)."""
        assert request.golden is not None
        replayed = replayed_patterns(self.store, start, end, sorted(request.sources))
        if request.write_golden:
            write_golden(request.golden, golden_document(replayed, start, end))
            summary["golden_written"] = str(request.golden)
            return None
        diff = compare_golden(read_golden(request.golden)["patterns"], [golden_record(p) for p in replayed],
                              request.tolerance)
        summary["golden"] = {"file": str(request.golden), "regression": diff.regression, **diff.as_dict()}
        return diff

    def _record(self, record: ReplayRecord, request: ReplayRequest, summary: dict[str, Any]) -> None:
        """The MLflow run and the audit row of a finished replay (a failed one has no counts to log)."""
        sources = sorted(request.sources)
        counts = {"events": summary["events"], "pattern_events": summary["pattern_events"],
                  **{f"pattern_events.{k}": v for k, v in summary["pattern_events_by_type"].items()}
                  } if "events" in summary else {}
        self.tracker.log_run(
            f"replay {record.start}..{record.end}",
            params={"start": record.start, "end": record.end, "sources": ",".join(sources) or "all",
                    "config_hash": summary["config_hash"], "actor": request.actor, **library_versions()},
            metrics={**counts, "seconds": summary["seconds"], "partitions": summary["partitions"],
                     **detector_seconds_metrics(summary["detector_seconds"])},
            tags={"qraft.kind": "replay", "qraft.status": record.status, "qraft.replay_id": record.id},
        )
        after = {k: summary[k] for k in ("status", "events", "pattern_events_by_type", "error") if k in summary}
        record_audit(self.store, request.actor, "replay", f"[{record.start}, {record.end})", after=after,
                     detail={"config_hash": summary["config_hash"], "sources": sources, "id": record.id})

    def _audit_failure(self, record: ReplayRecord, request: ReplayRequest, error: str) -> None:
        """The audit row of a replay cut short by an error; the store may be what failed, so it may not land."""
        try:
            record_audit(self.store, request.actor, "replay", f"[{record.start}, {record.end})",
                         after={"status": "failed", "error": error},
                         detail={"sources": sorted(request.sources), "id": record.id})
        except Exception as exc:
            logger.warning("replay %s: its audit row was not written (%s: %s)", record.id, type(exc).__name__,
                           first_line(exc))

    def status(self, replay_id: str | None = None) -> list[ReplayRecord]:
        """One replay's record (ConfigError when unknown), or every record, newest first."""
        if replay_id is None:
            return sorted(self.registry.records(), key=lambda r: r.started_at, reverse=True)
        try:
            record = self.registry.get(replay_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if record is None:
            raise ConfigError(f"no replay {replay_id}")
        return [record]
