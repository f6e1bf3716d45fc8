"""A broker pass's writes as three bulk statements instead of one ORM object per row.

A pass over 10,000 queued jobs offers thousands of attempts and records a decision for
each job; building and flushing an ``Attempt`` and a ``PlacementRecord`` per job was most
of the pass's time. Here the rows are plain dicts, written with one executemany each
(attempts, decisions, the placed jobs' attempt/site), on SQLite and PostgreSQL alike. The
pass reads the queued jobs as plain rows too; a placed job the session happens to hold as
an ORM object is expired, so it is read back as the database now holds it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, SQLModel

from hub.broker.rules import SiteView, Verdict
from hub.db import after_commit
from hub.jobs.models import Attempt, Job, PlacementRecord
from hub.jobs.notify import Notifier
from shared.schemas.jobs import JobSpec

_JOBS, _ATTEMPTS, _DECISIONS = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Attempt, PlacementRecord))
_PLACED = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(attempt=bindparam("b_attempt"), site_id=bindparam("b_site_id"), updated_at=bindparam("b_updated_at"))
)


class PassWrites:
    """Rows a pass will write, kept until ``write``."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.sites: set[int] = set()

    def offer(
        self, job_id: str, attempts_before: int, spec: JobSpec, site: SiteView, best: Verdict, now: datetime, summary: str,
        verdicts: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        """What ``service._offer`` does for a job without inputs to stage, as rows."""
        number = attempts_before + 1
        self.attempts.append(
            {"id": uuid.uuid4().hex, "job_id": job_id, "number": number, "site_id": site.id, "offered_at": now,
             "cpus": spec.resources.cpus, "gpus": spec.resources.gpus, "gpu_model": best.gpu_model,
             "partition": best.queue}
        )  # fmt: skip
        self.jobs.append({"b_id": job_id, "b_attempt": number, "b_site_id": site.id, "b_updated_at": now})
        self.decision(job_id, number, now, "placed", summary, verdicts, site.name)
        self.sites.add(site.id)

    def decision(
        self, job_id: str, attempt: int, now: datetime, outcome: str, summary: str, verdicts: list[dict[str, Any]],
        site: str | None = None,
    ) -> None:  # fmt: skip
        self.decisions.append(
            {"job_id": job_id, "attempt": attempt, "decided_at": now, "outcome": outcome, "site": site, "summary": summary,
             "verdicts": verdicts}
        )  # fmt: skip

    def write(self, session: Session, notifier: Notifier | None) -> None:
        """Everything kept, in one statement per table; the sites are woken once committed."""
        session.flush()  # the ORM's own pending rows (jobs placed one by one) go first
        conn = session.connection()
        if self.jobs:
            conn.execute(_PLACED, self.jobs)
            for row in self.jobs:  # a copy this session already holds would be stale
                held = session.identity_map.get(identity_key(Job, row["b_id"]))
                if held is not None:
                    session.expire(held)
        if self.attempts:
            conn.execute(insert(_ATTEMPTS), self.attempts)
        if self.decisions:
            conn.execute(insert(_DECISIONS), self.decisions)
        if notifier is not None and self.sites:
            wake, sites = notifier, sorted(self.sites)

            def woken() -> None:
                for site_id in sites:
                    wake.notify(site_id)

            after_commit(session, woken)
        self.attempts, self.decisions, self.jobs, self.sites = [], [], [], set()
