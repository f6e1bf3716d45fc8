"""What a broker pass reads of the queue, as plain rows through Core selects.

The pass used to read the queued jobs and then ask for their last decisions and earlier
attempts with ``IN (...)`` lists of up to 10,000 ids: SQLAlchemy renders such a list as
one bound parameter per id, which cost more than the rows themselves. Here the two
follow-up reads name the jobs read by one parameter on SQLite (their ids as a JSON array,
``json_each``) and the queue by a subquery on PostgreSQL (every queued, unplaced job: a
superset when the pass is limited, which only costs rows never looked up), and the last
decision of each job is found in the database, not by reading all of its decisions.

The specs come as text, with beside each the part the broker reads (the spec without
``UNREAD``, cut in the database): jobs alike in that part share one parsed ``JobSpec``
(``service._placement_spec``), so only the first of them is decoded and validated.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from sqlalchemy import ColumnElement, Connection, Integer, Text, cast, func, literal_column, select
from sqlmodel import SQLModel

from hub.jobs.models import Attempt, Job, PlacementRecord

_JOBS, _ATTEMPTS, _DECISIONS = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Attempt, PlacementRecord))
_WAITING = (_JOBS.c.state == "QUEUED") & _JOBS.c.site_id.is_(None)


#: What the broker never reads of a spec (``search.job_key`` leaves out the same).
UNREAD = ("command", "idempotency_key", "name", "outputs", "priority", "relion", "tags", "tes")


class Queued(NamedTuple):
    """A queued job as a pass reads it."""

    id: str
    institution: str
    attempt: int
    read: str  # the spec without UNREAD, as JSON text: equal for jobs alike in what the broker reads
    spec: str  # the whole spec, as JSON text


def _read_part(dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":  # jsonb's text form orders keys itself
        return literal_column(f"(jobs.spec::jsonb - '{{{','.join(UNREAD)}}}'::text[])::text")
    return func.json_remove(_JOBS.c.spec, *(f"$.{key}" for key in UNREAD))


def read_queue(conn: Connection, limit: int) -> tuple[list[Queued], dict[str, str], set[str]]:
    """(queued, unplaced jobs, highest priority and oldest first; the summary of each one's
    last decision; the jobs with an attempt lost, refused or ended in a system error)."""
    # Which jobs, in order, from the index alone; their specs joined to them after: a sort that
    # carried each spec along cost four times the rest of the read on SQLite.
    order = (_JOBS.c.priority.desc(), _JOBS.c.created_at, _JOBS.c.id)  # by id: the same order every pass
    read = _read_part(conn.dialect.name)
    if conn.dialect.name == "sqlite":
        # By rowid: SQLite then reads the chosen rows in the table's own order, page after page
        # (joined by id, it read them in the order of the ids, a page each: a third of the read).
        # Their creation times as stored (text of one width, the order ORDER BY gives), not
        # converted to datetimes only to be sorted.
        rowid = literal_column("jobs.rowid", Integer)
        chosen = select(rowid).select_from(_JOBS).where(_WAITING).order_by(*order).limit(limit)
        stmt = select(_JOBS.c.priority, cast(_JOBS.c.created_at, Text), _JOBS.c.id, _JOBS.c.institution,
                      _JOBS.c.attempt, read, cast(_JOBS.c.spec, Text)).where(rowid.in_(chosen))  # fmt: skip
    else:
        first = select(_JOBS.c.id, _JOBS.c.priority, _JOBS.c.created_at).where(_WAITING).order_by(*order).limit(limit).subquery()
        stmt = select(first.c.priority, first.c.created_at, _JOBS.c.id, _JOBS.c.institution, _JOBS.c.attempt, read,
                      cast(_JOBS.c.spec, Text)).join_from(first, _JOBS, _JOBS.c.id == first.c.id)  # fmt: skip
    rows = sorted(conn.execute(stmt), key=lambda r: (-r[0], r[1], r[2]))  # neither keeps the order chosen
    jobs = [Queued(*row[2:]) for row in rows]
    if not jobs:
        return [], {}, set()
    if conn.dialect.name == "sqlite":
        # These jobs, as one parameter (a JSON array of their ids): finding the queue again by
        # its index reads every queued job's row (whether it is placed), twice.
        waiting = select(func.json_each(json.dumps([j.id for j in jobs])).table_valued("value").c.value)
    else:
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
