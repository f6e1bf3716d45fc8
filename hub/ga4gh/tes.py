"""TES tasks as cryomesh jobs: create, list, show in the three views, cancel, record results.

A task is a job (``hub.jobs.service``): the same broker, leases, site policies, tenant walls
and usage ledger. TES states are the job states (``JobState`` uses the TES names; UNKNOWN and
PAUSED are never produced). ``TesTaskRow`` keeps what only TES has (tags, description, the
task as sent, warnings, the executors' logs).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, or_
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.errors import BadRequest, Conflict, Forbidden, NotFound
from hub.ga4gh.models import TesTagRow, TesTaskRow
from hub.ga4gh.tes_map import to_spec
from hub.jobs import service as jobs
from hub.jobs.models import Attempt, Job, PlacementRecord
from hub.jobs.notify import Notifier
from hub.sites.models import Site
from shared.schemas.auth import Role
from shared.schemas.tes import TesState, TesTaskCreate

VIEWS = ("MINIMAL", "BASIC", "FULL")


def create(session: Session, principal: Principal, task: TesTaskCreate, notifier: Notifier | None, host: str) -> str:
    mapped = to_spec(session, principal, task, host)
    try:
        job, _ = jobs.submit(session, principal, mapped.spec, notifier)
    except Conflict as exc:  # no site could ever run it: a request no site can serve, each site's verdict said
        raise BadRequest(exc.detail) from None
    sent = task.model_dump(mode="json", include={"inputs", "outputs", "resources", "executors", "volumes"}, exclude_none=True)
    session.add(TesTaskRow(job_id=job.id, name=task.name, description=task.description, task=sent, warnings=mapped.warnings))
    session.add_all(TesTagRow(job_id=job.id, key=k, value=v) for k, v in (task.tags or {}).items())
    session.flush()
    return job.id


def _token(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def _untoken(token: str) -> tuple[datetime, str]:
    try:
        stamp, _, job_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("page_token is not one this server gave out") from None


def list_tasks(
    session: Session, principal: Principal, *, view: str, page_size: int, page_token: str | None, name_prefix: str | None,
    state: TesState | None, tags: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Newest first; ``next_page_token`` is the last task's (creation time, id)."""
    stmt = select(Job, TesTaskRow).join(TesTaskRow, col(TesTaskRow.job_id) == Job.id)
    if principal.role is Role.AGENT:
        raise Forbidden("agents do not list tasks; they poll for assignments")
    if principal.role is not Role.NETWORK_ADMIN:
        mine = col(Job.institution) == (principal.institution or "")
        stmt = stmt.where(or_(mine, col(Job.site_id) == principal.site_id) if principal.role is Role.SITE_ADMIN else mine)
    if name_prefix:
        escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(col(TesTaskRow.name).like(escaped + "%", escape="\\"))
    if state is not None:
        stmt = stmt.where(Job.state == state.value)
    for key, value in tags.items():
        match = and_(col(TesTagRow.job_id) == Job.id, col(TesTagRow.key) == key)
        stmt = stmt.where(exists().where(and_(match, col(TesTagRow.value) == value) if value else match))
    if page_token:
        created, job_id = _untoken(page_token)
        stmt = stmt.where(or_(col(Job.created_at) < created, and_(col(Job.created_at) == created, col(Job.id) > job_id)))
    rows = session.exec(stmt.order_by(col(Job.created_at).desc(), col(Job.id)).limit(page_size + 1)).all()
    page = rows[:page_size]
    known = _Known.load(session, [job.id for job, _ in page]) if view != "MINIMAL" else None
    out: dict[str, Any] = {"tasks": [render(session, job, row, view, known) for job, row in page]}
    if len(rows) > page_size:
        out["next_page_token"] = _token(page[-1][0].created_at, page[-1][0].id)
    return out


def get(session: Session, principal: Principal, task_id: str) -> tuple[Job, TesTaskRow]:
    job = jobs.get_visible(session, principal, task_id)
    row = session.get(TesTaskRow, job.id)
    if row is None:  # a job made through the cryomesh API is not a TES task
        raise NotFound(f"no task {task_id!r}")
    return job, row


def cancel(session: Session, principal: Principal, task_id: str, notifier: Notifier | None) -> None:
    get(session, principal, task_id)
    jobs.cancel(session, principal, task_id, notifier)


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


@dataclass
class _Known:
    """What the BASIC and FULL views of a page of tasks need, in four queries for the page
    (not four per task): tags, attempts, placement decisions, site names."""

    tags: dict[str, dict[str, str]]
    attempts: dict[str, list[Attempt]]
    decisions: dict[str, list[PlacementRecord]]
    sites: dict[int, str]

    @classmethod
    def load(cls, session: Session, ids: list[str]) -> _Known:
        known = cls({i: {} for i in ids}, {i: [] for i in ids}, {i: [] for i in ids}, {})
        if not ids:
            return known
        for t in session.exec(select(TesTagRow).where(col(TesTagRow.job_id).in_(ids))):
            known.tags[t.job_id][t.key] = t.value
        for a in session.exec(select(Attempt).where(col(Attempt.job_id).in_(ids)).order_by(col(Attempt.number))):
            known.attempts[a.job_id].append(a)
        query = select(PlacementRecord).where(col(PlacementRecord.job_id).in_(ids)).order_by(col(PlacementRecord.id))
        for d in session.exec(query):
            known.decisions[d.job_id].append(d)
        known.sites = {site.id: site.name for site in session.exec(select(Site)) if site.id is not None}
        return known


def _task_logs(job: Job, row: TesTaskRow, full: bool, known: _Known) -> list[dict[str, Any]]:
    """One TaskLog per attempt that a site took (the last one always, with the placement story)."""
    attempts, decisions, sites = known.attempts[job.id], known.decisions[job.id], known.sites
    result = row.result or {}
    logs = []
    taken: list[Attempt | None] = [a for a in attempts if a.claimed_at is not None]
    for a in taken or [None]:
        entry: dict[str, Any] = {"logs": [], "outputs": []}
        system = list(row.warnings)
        if a is not None:
            entry["metadata"] = {"site": sites.get(a.site_id, ""), "attempt": str(a.number), "local_id": a.local_id or ""}
            entry["start_time"] = _time(a.started_at or a.claimed_at)
            if a.ended_at:
                entry["end_time"] = _time(a.ended_at)
            if result.get("attempt") == a.number:
                entry["logs"] = [
                    {k: v for k, v in e.items() if full or k not in ("stdout", "stderr")} for e in result.get("executors", [])
                ]
                entry["outputs"] = result.get("outputs", [])
                system += result.get("system_logs", [])
            system += [f"placement: {d.outcome} at {d.site or '-'}: {d.summary}" for d in decisions if d.attempt == a.number]
            if a.reason:
                system.append(f"attempt {a.number} {a.state}: {a.reason}")
        else:
            system += [f"placement: {d.outcome}: {d.summary}" for d in decisions[-1:]]
        if job.state_reason and (a is None or a is taken[-1]):
            system.append(f"{job.state}: {job.state_reason}")
        if full:
            entry["system_logs"] = system
        logs.append(entry)
    return logs


def render(session: Session, job: Job, row: TesTaskRow, view: str, known: _Known | None = None) -> dict[str, Any]:
    """The task in one of the TES views: MINIMAL is id and state; BASIC leaves out input
    contents, executors' stdout/stderr and system logs; FULL has everything."""
    out: dict[str, Any] = {"id": job.id, "state": job.state}
    if view == "MINIMAL":
        return out
    full = view == "FULL"
    sent = row.task
    known = known or _Known.load(session, [job.id])
    inputs = [i if full else {k: v for k, v in i.items() if k != "content"} for i in sent.get("inputs", [])]
    out.update(
        {k: v for k, v in (("name", row.name), ("description", row.description)) if v is not None},
        inputs=inputs, outputs=sent.get("outputs", []), executors=sent["executors"], volumes=sent.get("volumes", []),
        tags=known.tags[job.id], logs=_task_logs(job, row, full, known),
        creation_time=_time(job.created_at),
    )  # fmt: skip
    if "resources" in sent:
        out["resources"] = sent["resources"]
    return out
