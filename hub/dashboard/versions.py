"""What tells whether a dashboard view changed, read without rendering it (see hub/etag.py).

Each version is a handful of aggregates over the tables the view reads. They are chosen
so that every write the view can show moves at least one of them: rows added or removed
move a count or the newest id; edits move ``max(updated_at)`` where a table keeps one;
attempts keep no ``updated_at``, but their states only move forward (offered -> claimed ->
ended, ...), so any change moves the count of some state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

_JOBS = """
SELECT (SELECT count(*) FROM jobs), (SELECT max(updated_at) FROM jobs), (SELECT max(created_at) FROM jobs),
       (SELECT count(*) FROM placements), (SELECT max(id) FROM placements)"""
_ATTEMPTS = "SELECT state, count(*) FROM attempts GROUP BY state ORDER BY state"
_SITE_NAMES = "SELECT count(*), max(id), max(updated_at) FROM sites"
_HISTORY = """
SELECT (SELECT count(*) FROM capacity_history), (SELECT max(id) FROM capacity_history),
       (SELECT max(received_at) FROM capacity_latest)"""


def _rows(session: Session, sql: str) -> list[tuple[Any, ...]]:
    rows = session.connection().execute(text(sql))
    return [tuple(v.isoformat() if isinstance(v, datetime) else v for v in row) for row in rows]


def jobs_version(session: Session) -> list[Any]:
    """Jobs, their decisions and attempts, and the sites' names (a job shows where it runs)."""
    return [_rows(session, _JOBS), _rows(session, _ATTEMPTS), _rows(session, _SITE_NAMES)]


def capacity_version(session: Session) -> list[Any]:
    """Capacity history: a bucket is rewritten by each heartbeat, which also rewrites the
    site's latest snapshot (``received_at``)."""
    return _rows(session, _HISTORY)
