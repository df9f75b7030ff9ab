"""Golden files: the pattern events a replay must reproduce, and how two sets differ.

A golden file is JSON: {"version": 1, "window": {"start", "end"}, "engines": [...],
"patterns": [{"type", "timestamp", "streams", "prev_state", "new_state",
"confidence", "cross_validated", "algorithms"}]}. Findings are matched on
(type, timestamp, streams); a matched pair differs when its states, its
cross-validation or its confidence (beyond the tolerance) differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from qraft_core.config import ConfigError
from qraft_core.events import PatternEvent, iso

GOLDEN_VERSION = 1
_KEYS = ("type", "timestamp", "streams", "prev_state", "new_state", "confidence", "cross_validated", "algorithms")


def golden_record(pattern: PatternEvent) -> dict[str, Any]:
    return {
        "type": pattern.type.value,
        "timestamp": iso(pattern.timestamp),
        "streams": sorted(pattern.source_streams),
        "prev_state": pattern.details.prev_state,
        "new_state": pattern.details.new_state,
        "confidence": round(pattern.confidence, 6),
        "cross_validated": pattern.cross_validated,
        "algorithms": sorted({a.name for a in pattern.algorithms or [pattern.algorithm]}),
    }


def golden_document(patterns: Iterable[PatternEvent], start: datetime, end: datetime) -> dict[str, Any]:
    found = list(patterns)
    engines = sorted(set().union(*(p.engines for p in found))) if found else []
    records = sorted((golden_record(p) for p in found), key=lambda r: (r["timestamp"], r["type"], r["streams"]))
    return {
        "version": GOLDEN_VERSION,
        "window": {"start": iso(start), "end": iso(end)},
        "engines": sorted(engines),
        "patterns": records,
    }


def write_golden(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def read_golden(path: Path) -> dict[str, Any]:
    """The golden document, or a ConfigError saying what is wrong with the file."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: golden file not found (create it with --write-golden)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: <top>: expected an object with version, window and patterns")
    if document.get("version") != GOLDEN_VERSION:
        raise ConfigError(
            f"{path}: version: expected {GOLDEN_VERSION}, got {document.get('version')!r} "
            "(regenerate it with --write-golden)"
        )
    patterns = document.get("patterns")
    if not isinstance(patterns, list):
        raise ConfigError(f"{path}: patterns: expected a list of findings")
    for index, record in enumerate(patterns):
        missing = [k for k in _KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise ConfigError(f"{path}: patterns[{index}]: missing key(s) {', '.join(missing)}")
    return document


@dataclass
class GoldenDiff:
    missing: list[dict[str, Any]] = field(default_factory=list)  # in the golden file, not replayed
    extra: list[dict[str, Any]] = field(default_factory=list)  # replayed, not in the golden file
    changed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"missing": self.missing, "extra": self.extra, "changed": self.changed}

    def lines(self) -> list[str]:
        out = [f"- missing {r['type']} at {r['timestamp']} on {','.join(r['streams'])}" for r in self.missing]
        out += [f"+ extra   {r['type']} at {r['timestamp']} on {','.join(r['streams'])}" for r in self.extra]
        out += [
            f"~ changed {c['key']['type']} at {c['key']['timestamp']}: "
            + "; ".join(f"{k} {v['golden']!r} → {v['replayed']!r}" for k, v in c["fields"].items())
            for c in self.changed
        ]
        return out


def _key(record: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    return record["type"], record["timestamp"], tuple(record["streams"])


def compare_golden(
    golden: list[dict[str, Any]], replayed: list[dict[str, Any]], confidence_tolerance: float = 0.05
) -> GoldenDiff:
    """What the replay lost, gained or changed against the golden records.

    >>> a = {"type": "anomaly", "timestamp": "t", "streams": ["s"], "prev_state": "", "new_state": "x",
    ...      "confidence": 0.8, "cross_validated": False, "algorithms": ["hst"]}
    >>> compare_golden([a], [{**a, "confidence": 0.82}]).regression
    False
    >>> compare_golden([a], [{**a, "confidence": 0.9}]).changed[0]["fields"]
    {'confidence': {'golden': 0.8, 'replayed': 0.9}}
    """
    diff = GoldenDiff()
    replayed_by_key = {_key(r): r for r in replayed}
    golden_keys = set()
    for record in golden:
        key = _key(record)
        golden_keys.add(key)
        other = replayed_by_key.get(key)
        if other is None:
            diff.missing.append(record)
            continue
        fields: dict[str, Any] = {}
        for name in ("prev_state", "new_state", "cross_validated", "algorithms"):
            if record[name] != other[name]:
                fields[name] = {"golden": record[name], "replayed": other[name]}
        if abs(float(record["confidence"]) - float(other["confidence"])) > confidence_tolerance:
            fields["confidence"] = {"golden": record["confidence"], "replayed": other["confidence"]}
        if fields:
            diff.changed.append({"key": {"type": key[0], "timestamp": key[1], "streams": list(key[2])},
                                 "fields": fields})
    diff.extra = [r for r in replayed if _key(r) not in golden_keys]
    return diff


def engine_agreement(patterns: Iterable[PatternEvent]) -> dict[str, Any]:
    """Which findings both engines made and which only one made, for the engine-agreement report."""
    report: dict[str, list[dict[str, Any]]] = {"both": [], "river_only": [], "capymoa_only": []}
    for pattern in patterns:
        engines = pattern.engines
        record = golden_record(pattern)
        if len(engines) > 1:  # two different engines agreed (qraft, river or capymoa)
            report["both"].append(record)
        elif "capymoa" in engines:
            report["capymoa_only"].append(record)
        else:
            report["river_only"].append(record)
    return {"counts": {k: len(v) for k, v in report.items()}, **report}
