"""What a broker pass reads of the queue, as plain rows through Core selects.

The pass used to read the queued jobs and then ask for their last decisions and earlier
attempts with ``IN (...)`` lists of up to 10,000 ids: SQLAlchemy renders such a list as
one bound parameter per id, which cost more than the rows themselves. Here the two
follow-up reads name the queue by a subquery instead (every queued, unplaced job: a
superset when the pass is limited, which only costs rows never looked up), and the last
decision of each job is found in the database, not by reading all of its decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select
from sqlmodel import SQLModel

from hub.jobs.models import Attempt, Job, PlacementRecord

_JOBS, _ATTEMPTS, _DECISIONS = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Attempt, PlacementRecord))
_WAITING = (_JOBS.c.state == "QUEUED") & _JOBS.c.site_id.is_(None)


class Queued(NamedTuple):
    """A queued job as a pass reads it."""

    id: str
    institution: str
    attempt: int
    spec: Mapping[str, Any]


def read_queue(conn: Connection, limit: int) -> tuple[list[Queued], dict[str, str], set[str]]:
    """(queued, unplaced jobs, highest priority and oldest first; the summary of each one's
    last decision; the jobs with an attempt lost, refused or ended in a system error)."""
    jobs = [
        Queued(*row)
        for row in conn.execute(
            select(_JOBS.c.id, _JOBS.c.institution, _JOBS.c.attempt, _JOBS.c.spec)
            .where(_WAITING)
            .order_by(_JOBS.c.priority.desc(), _JOBS.c.created_at, _JOBS.c.id)  # by id: the same order every pass
            .limit(limit)
        )
    ]
    if not jobs:
        return [], {}, set()
    waiting = select(_JOBS.c.id).where(_WAITING)
    newest = select(func.max(_DECISIONS.c.id)).where(_DECISIONS.c.job_id.in_(waiting)).group_by(_DECISIONS.c.job_id)
    last = {job_id: summary for job_id, summary in conn.execute(
        select(_DECISIONS.c.job_id, _DECISIONS.c.summary).where(_DECISIONS.c.id.in_(newest))
    )}  # fmt: skip
    with_history = set(
        conn.execute(
            select(_ATTEMPTS.c.job_id).where(
                _ATTEMPTS.c.job_id.in_(waiting),
                _ATTEMPTS.c.state.in_(("lost", "refused")) | (_ATTEMPTS.c.tes_state == "SYSTEM_ERROR"),
            )
        ).scalars()
    )
    return jobs, last, with_history
