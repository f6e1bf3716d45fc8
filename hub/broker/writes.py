"""A broker pass's writes as three bulk statements instead of one ORM object per row.

A pass over 10,000 queued jobs offers thousands of attempts and records a decision for
each job; building and flushing an ``Attempt`` and a ``PlacementRecord`` per job was most
of the pass's time. Here the rows are plain dicts, written with one executemany each
(attempts, decisions, the placed jobs' attempt/site), on SQLite and PostgreSQL alike. The
pass reads the queued jobs as plain rows too (``hub.broker.queue``); a placed job the
session happens to hold as an ORM object is expired, so it is read back as the database
now holds it.

A decision's verdicts are the job's own (the chosen site's) followed by the sites ruled out,
grouped by reason; jobs of one kind share those groups (``service._grouped_once``). Encoding
each decision's JSON whole re-encoded the same groups 10,000 times and was a third of the
writes' time, so each shared group is encoded once and a decision's JSON is put together
from the parts: the same text ``json.dumps`` gives for the whole list.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel

from hub.broker.rules import SiteView, Verdict
from hub.db import after_commit
from hub.jobs.models import Attempt, Job, PlacementRecord
from hub.jobs.notify import Notifier
from shared.schemas.jobs import JobSpec

Verdicts = list[dict[str, Any]]


class _EncodedJSON(TypeDecorator[str]):
    """A JSON column's value already encoded as text: written as is (the column's own type
    would encode the text again as a JSON string)."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


_JOBS, _ATTEMPTS, _DECISIONS = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Attempt, PlacementRecord))
_PLACED = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(attempt=bindparam("b_attempt"), site_id=bindparam("b_site_id"), updated_at=bindparam("b_updated_at"))
)
_DECIDED = insert(_DECISIONS).values(verdicts=bindparam("b_verdicts", type_=_EncodedJSON()))


class PassWrites:
    """Rows a pass will write, kept until ``write``."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.sites: set[int] = set()
        self._encoded: dict[int, tuple[Verdicts, str]] = {}  # by id of a shared part, kept alive with its text

    def offer(
        self, job_id: str, attempts_before: int, spec: JobSpec, site: SiteView, best: Verdict, now: datetime, summary: str,
        own: Verdicts, shared: Sequence[Verdicts],
    ) -> None:  # fmt: skip
        """What ``service._offer`` does for a job without inputs to stage, as rows."""
        number = attempts_before + 1
        self.attempts.append(
            {"id": uuid.uuid4().hex, "job_id": job_id, "number": number, "site_id": site.id, "offered_at": now,
             "cpus": spec.resources.cpus, "gpus": spec.resources.gpus, "gpu_model": best.gpu_model,
             "partition": best.queue}
        )  # fmt: skip
        self.jobs.append({"b_id": job_id, "b_attempt": number, "b_site_id": site.id, "b_updated_at": now})
        self.decision(job_id, number, now, "placed", summary, own, shared, site.name)
        self.sites.add(site.id)

    def decision(
        self, job_id: str, attempt: int, now: datetime, outcome: str, summary: str, own: Verdicts,
        shared: Sequence[Verdicts], site: str | None = None,
    ) -> None:  # fmt: skip
        """A decision whose verdicts are ``own`` followed by each of ``shared`` (lists other
        decisions of the pass share, unchanged until ``write``)."""
        self.decisions.append(
            {"job_id": job_id, "attempt": attempt, "decided_at": now, "outcome": outcome, "site": site, "summary": summary,
             "b_verdicts": self._json(own, shared)}
        )  # fmt: skip

    def _json(self, own: Verdicts, shared: Sequence[Verdicts]) -> str:
        """``json.dumps(own + shared[0] + ...)``, each shared part encoded once per pass."""
        items = [json.dumps(own)[1:-1]] if own else []
        for part in shared:
            if part:
                kept = self._encoded.get(id(part))
                if kept is None:
                    kept = self._encoded[id(part)] = (part, json.dumps(part)[1:-1])
                items.append(kept[1])
        return "[" + ", ".join(items) + "]"

    def write(self, session: Session, notifier: Notifier | None) -> None:
        """Everything kept, in one statement per table; the sites are woken once committed."""
        session.flush()  # the ORM's own pending rows (jobs placed one by one) go first
        conn = session.connection()
        if self.jobs:
            conn.execute(_PLACED, self.jobs)
            placed = {row["b_id"] for row in self.jobs}
            for held in list(session.identity_map.values()):  # a copy this session already holds would be stale
                if isinstance(held, Job) and held.id in placed:
                    session.expire(held)
        if self.attempts:
            conn.execute(insert(_ATTEMPTS), self.attempts)
        if self.decisions:
            conn.execute(_DECIDED, self.decisions)
        if notifier is not None and self.sites:
            wake, sites = notifier, sorted(self.sites)

            def woken() -> None:
                for site_id in sites:
                    wake.notify(site_id)

            after_commit(session, woken)
        self.attempts, self.decisions, self.jobs, self.sites, self._encoded = [], [], [], set(), {}
