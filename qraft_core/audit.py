"""The append-only audit trail: every change a person or process makes is recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl

from qraft_core.store.base import EventStore


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def record_audit(
    store: EventStore,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
) -> None:
    """Append one row to `audit_log` (who, what, on what, before/after)."""
    store.insert(
        "audit_log",
        pl.DataFrame(
            {
                "ts": [datetime.now(UTC)],
                "actor": [actor],
                "action": [action],
                "target": [target],
                "before": [_text(before)],
                "after": [_text(after)],
                "detail": [_text(detail)],
            }
        ),
    )
