"""Jobs: submission, visibility, cancel, and the agent side (claim, report, refuse, leases)."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.broker.cache import SiteViewCache
from hub.broker.rules import SiteView
from hub.broker.search import Board
from hub.broker.service import ensure_possible, place_job
from hub.broker.views import load_site_views
from hub.costs import service as budgets
from hub.costs.service import attempt_cost
from hub.datasets.service import get_visible as get_visible_dataset
from hub.db import after_commit
from hub.errors import BadRequest, Conflict, Forbidden, NotFound
from hub.estimates.service import learn
from hub.ga4gh.results import record_tes_result
from hub.jobs import states
from hub.jobs.models import Attempt, Job, PlacementRecord, UsageEntry
from hub.jobs.notify import Notifier
from hub.jobs.staging import input_paths
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.jobs import (
    Assignment,
    AttemptReport,
    JobLogs,
    JobPlacement,
    JobPublic,
    JobSpec,
    JobState,
    PlacementDecision,
    ReportAck,
    SiteVerdict,
)

TAIL_BYTES = 16_384  # kept per stream on the hub


# ---------------------------------------------------------------- visibility


def can_see(principal: Principal, job: Job) -> bool:
    if principal.role is Role.NETWORK_ADMIN:
        return True
    if principal.role is Role.AGENT:
        return False
    if principal.institution and principal.institution == job.institution:
        return True
    return principal.role is Role.SITE_ADMIN and job.site_id is not None and job.site_id == principal.site_id


def get_visible(session: Session, principal: Principal, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or not can_see(principal, job):
        raise NotFound(f"no job {job_id!r}")  # another institution's job is not even confirmed to exist
    return job


def to_public(session: Session, job: Job, site_names: dict[int, str] | None = None) -> JobPublic:
    site = None
    if job.site_id is not None:
        site = (
            site_names[job.site_id]
            if site_names and job.site_id in site_names
            else getattr(session.get(Site, job.site_id), "name", None)
        )
    return JobPublic(
        id=job.id, name=job.name, kind=job.kind, state=JobState(job.state), site=site, attempt=job.attempt, owner=job.owner,
        institution=job.institution, priority=job.priority, tags=list(job.spec.get("tags", [])),
        spec=JobSpec.model_validate(job.spec), state_reason=job.state_reason, exit_code=job.exit_code,
        created_at=job.created_at, updated_at=job.updated_at, finished_at=job.finished_at,
    )  # fmt: skip


def list_jobs(
    session: Session,
    principal: Principal,
    state: JobState | None,
    site: str | None,
    institution: str | None,
    limit: int,
    offset: int,
) -> tuple[list[JobPublic], int]:
    if principal.role is Role.AGENT:
        raise Forbidden("agents do not list jobs; they poll for assignments")
    stmt = select(Job)
    if principal.role is not Role.NETWORK_ADMIN:
        mine = col(Job.institution) == (principal.institution or "")
        stmt = stmt.where(or_(mine, col(Job.site_id) == principal.site_id) if principal.role is Role.SITE_ADMIN else mine)
    if state:
        stmt = stmt.where(Job.state == state.value)
    if institution:
        stmt = stmt.where(Job.institution == institution)
    if site:
        stmt = stmt.where(col(Job.site_id).in_(select(Site.id).where(Site.name == site)))
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Job.created_at).desc(), col(Job.id)).limit(limit).offset(offset)).all()
    names = {s.id: s.name for s in session.exec(select(Site)) if s.id is not None}
    return [to_public(session, j, names) for j in rows], total


# ---------------------------------------------------------------- submit, cancel


def resolve_inputs(session: Session, principal: Principal, spec: JobSpec) -> JobSpec:
    """The spec with each input named by its dataset id (an EMPIAR/EMDB accession resolved; 409 if ambiguous)."""
    inputs = []
    for ref in spec.inputs:
        try:
            ds = get_visible_dataset(session, principal, ref.dataset)
        except NotFound:
            raise BadRequest(f"input dataset {ref.dataset!r} does not exist or is not visible to you") from None
        inputs.append(ref.model_copy(update={"dataset": ds.id}))
        sizes = _particle_sizes(ds.meta.get("image_sets", []))
        if sizes:
            filled = {k: v for k, v in sizes.items() if getattr(spec.workload, k) is None}
            spec = spec.model_copy(update={"workload": spec.workload.model_copy(update=filled)})
    return spec.model_copy(update={"inputs": inputs}) if spec.inputs else spec


def _particle_sizes(image_sets: list[dict[str, Any]]) -> dict[str, Any]:
    """Particle count, box and pixel size of a dataset's particle stacks (for run-time estimates)."""
    stacks = [s for s in image_sets if s.get("category") == "particle_stacks"]
    if not stacks:
        return {}
    out: dict[str, Any] = {}
    if all(s.get("particles") for s in stacks):
        out["particles"] = sum(int(s["particles"]) for s in stacks)
    if stacks[0].get("width"):
        out["box_px"] = int(stacks[0]["width"])
    if stacks[0].get("pixel_size_a"):
        out["pixel_size_a"] = float(stacks[0]["pixel_size_a"])
    return out


def submit(
    session: Session,
    principal: Principal,
    spec: JobSpec,
    notifier: Notifier | None,
    site_views: SiteViewCache | None = None,
    currency: str = "USD",
) -> tuple[Job, bool]:
    """(job, created). The same idempotency key from the same owner returns the first job.
    Placed on the process's ``site_views`` (see hub/broker/cache.py), or on views loaded now.
    A new job is refused (409) when its institution's enforced budget is spent for the month,
    or when its deadline has passed."""
    if principal.role is Role.AGENT:
        raise Forbidden("agents cannot submit jobs")
    if not principal.institution:
        raise Forbidden("submitting a job needs an account bound to an institution")
    owner = principal.label()
    spec = resolve_inputs(session, principal, spec)
    if spec.idempotency_key:
        existing = session.exec(select(Job).where(Job.owner == owner, Job.idempotency_key == spec.idempotency_key)).first()
        if existing is not None:
            if JobSpec.model_validate(existing.spec) != spec:
                raise Conflict(f"idempotency key {spec.idempotency_key!r} was used for a different job ({existing.id})")
            return existing, False
    now = utcnow()
    if spec.deadline is not None and spec.deadline <= now:
        raise Conflict(f"the job's deadline {spec.deadline.isoformat()} has already passed")
    budgets.refuse_if_exhausted(session, principal.institution, currency)  # reads only: before the views' lock
    with site_views.views(session, now) if site_views else nullcontext(load_site_views(session, now)) as views:
        board = site_views.board(now) if site_views else None
        return _place_new(session, principal, spec, notifier, views, now, board), True


def _place_new(
    session: Session,
    principal: Principal,
    spec: JobSpec,
    notifier: Notifier | None,
    views: list[SiteView],
    now: datetime,
    board: Board | None,
) -> Job:
    assert principal.institution
    ensure_possible(views, spec, principal.institution)
    job = Job(
        id=uuid.uuid4().hex, owner=principal.label(), institution=principal.institution, name=spec.name, kind=spec.kind.value,
        spec=spec.model_dump(mode="json"), priority=spec.priority, idempotency_key=spec.idempotency_key, created_at=now,
        updated_at=now,
    )  # fmt: skip
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent submit with the same key won
        raise Conflict(f"idempotency key {spec.idempotency_key!r} is being used by a concurrent request; retry") from exc
    place_job(session, job, views, now, notifier, board=board)
    session.flush()
    return job


def cancel(session: Session, principal: Principal, job_id: str, notifier: Notifier | None) -> Job:
    job = get_visible(session, principal, job_id)
    allowed = (
        principal.role is Role.NETWORK_ADMIN
        or job.owner == principal.label()
        or (principal.role is Role.SITE_ADMIN and job.site_id is not None and job.site_id == principal.site_id)
    )
    if not allowed:
        raise Forbidden("only the job's owner, a network admin or the admin of the site running it may cancel it")
    state = JobState(job.state)
    if state.final:
        raise Conflict(f"job {job.id} already ended ({state.value})")
    if state is JobState.CANCELING:
        return job
    offer = _current_attempt(session, job)
    if state is JobState.QUEUED or state is JobState.PREEMPTED:
        if offer is not None:
            states.end_attempt(session, offer, "withdrawn", ("offered",), reason="job canceled before it was claimed")
        states.move(session, job, JobState.CANCELED, f"canceled by {principal.label()} before it started", site_id=None)
        return job
    if offer is not None and offer.state == "staging":  # nothing runs yet: it was waiting for its inputs
        states.end_attempt(session, offer, "withdrawn", ("staging",), reason="job canceled while its inputs were copied")
        states.move(session, job, JobState.CANCELED, f"canceled by {principal.label()} before it started")
        return job
    states.move(session, job, JobState.CANCELING, f"cancel requested by {principal.label()}", cancel_requested=True)
    if notifier is not None and job.site_id is not None:
        site_id = job.site_id
        after_commit(session, lambda: notifier.notify(site_id))
    return job


def _current_attempt(session: Session, job: Job) -> Attempt | None:
    if job.attempt == 0:
        return None
    return session.exec(select(Attempt).where(Attempt.job_id == job.id, Attempt.number == job.attempt)).first()


# ---------------------------------------------------------------- placement explained


def placement(session: Session, principal: Principal, job_id: str) -> JobPlacement:
    job = get_visible(session, principal, job_id)
    records = session.exec(
        select(PlacementRecord).where(PlacementRecord.job_id == job.id).order_by(col(PlacementRecord.id))
    ).all()
    history = [
        PlacementDecision(
            decided_at=r.decided_at, attempt=r.attempt, outcome=r.outcome, site=r.site, summary=r.summary,
            verdicts=[SiteVerdict.model_validate(v) for v in r.verdicts],
        )
        for r in records
    ]  # fmt: skip
    latest = history[-1] if history else None
    site = to_public(session, job).site
    state = JobState(job.state)
    if state is JobState.QUEUED and site is None:
        explanation = f"still queued — {latest.summary}" if latest else "still queued; the broker has not looked at it yet"
    elif site is not None and latest is not None and latest.site == site:
        explanation = f"{state.value} at {site}: {latest.summary}"
    else:
        explanation = f"{state.value}" + (f" at {site}" if site else "") + (f" ({job.state_reason})" if job.state_reason else "")
    return JobPlacement(job=job.id, state=state, site=site, explanation=explanation, latest=latest, history=history)


def logs(session: Session, principal: Principal, job_id: str) -> JobLogs:
    job = get_visible(session, principal, job_id)
    return JobLogs(
        job=job.id,
        attempt=job.attempt,
        site=to_public(session, job).site,
        stdout_tail=job.stdout_tail,
        stderr_tail=job.stderr_tail,
    )


# ---------------------------------------------------------------- the agent side


def lease_for(site: Site, settings: HubSettings) -> float:
    return (site.heartbeat_interval_s or settings.heartbeat_interval_s) * settings.missed_heartbeats


def assignments(session: Session, site: Site, settings: HubSettings) -> list[Assignment]:
    """Offers waiting for this site, and running attempts whose jobs should be canceled."""
    rows = session.exec(
        select(Attempt, Job)
        .join(Job, col(Job.id) == Attempt.job_id)
        .where(Attempt.site_id == site.id, col(Attempt.state).in_(("offered", "claimed")))
        .order_by(col(Job.priority).desc(), col(Attempt.offered_at))
    ).all()
    out = []
    for attempt, job in rows:
        if attempt.state == "offered":
            action = "run"
        elif job.cancel_requested:
            action = "cancel"
        else:
            continue
        out.append(
            Assignment(
                attempt_id=attempt.id,
                job_id=job.id,
                attempt=attempt.number,
                action=action,
                spec=JobSpec.model_validate(job.spec),
                lease_s=lease_for(site, settings),
                institution=job.institution,
                inputs=input_paths(session, JobSpec.model_validate(job.spec), attempt.site_id) if action == "run" else {},
                partition=attempt.partition,
            )
        )
    return out


#: Sites per query when re-checking for waiting polls (SQLite allows 32,766 parameters).
_SITES_PER_QUERY = 5000


def sites_with_work(session: Session, site_ids: set[int]) -> set[int]:
    """Which of ``site_ids`` have something ``assignments`` would return: one query for all
    the polls waiting in a hub process (per 5,000 sites), over the (site_id, state) index."""
    ids, found = sorted(site_ids), set[int]()
    for i in range(0, len(ids), _SITES_PER_QUERY):
        found.update(
            session.exec(
                select(Attempt.site_id)
                .join(Job, col(Job.id) == Attempt.job_id)
                .where(col(Attempt.site_id).in_(ids[i : i + _SITES_PER_QUERY]), col(Attempt.state).in_(("offered", "claimed")))
                .where(or_(col(Attempt.state) == "offered", col(Job.cancel_requested)))
                .distinct()
            )
        )
    return found


def _agent_attempt(session: Session, principal: Principal, attempt_id: str) -> tuple[Attempt, Job]:
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        raise NotFound(f"no attempt {attempt_id!r}")
    if attempt.site_id != principal.site_id:
        raise Forbidden(f"attempt {attempt_id} belongs to another site")
    job = session.get(Job, attempt.job_id)
    assert job is not None
    return attempt, job


def claim(session: Session, principal: Principal, attempt_id: str, settings: HubSettings) -> Assignment:
    attempt, job = _agent_attempt(session, principal, attempt_id)
    site = session.get(Site, attempt.site_id)
    assert site is not None
    now = utcnow()
    lease = lease_for(site, settings)
    if not states.claim_attempt(session, attempt, claimed_at=now, lease_expires_at=now + timedelta(seconds=lease)):
        raise Conflict(f"attempt {attempt_id} is {attempt.state}, not offered; it cannot be claimed")
    states.move(session, job, JobState.INITIALIZING, f"claimed by {site.name}")
    return Assignment(attempt_id=attempt.id, job_id=job.id, attempt=attempt.number, action="run",
                      spec=JobSpec.model_validate(job.spec), lease_s=lease, institution=job.institution,
                      partition=attempt.partition)  # fmt: skip


def refuse(session: Session, principal: Principal, attempt_id: str, reason: str) -> Job:
    """The site says no: the job goes back to the broker, which avoids this site for it."""
    attempt, job = _agent_attempt(session, principal, attempt_id)
    if not states.end_attempt(session, attempt, "refused", ("offered", "claimed"), reason=reason):
        raise Conflict(f"attempt {attempt_id} is {attempt.state}; it can no longer be refused")
    if JobState(job.state) is JobState.QUEUED:
        job.site_id = None
        job.state_reason = f"refused by {principal.site}: {reason}"
        job.updated_at = utcnow()
        session.add(job)
    else:
        states.move(session, job, JobState.QUEUED, f"refused by {principal.site}: {reason}", site_id=None)
    return job


def _tail(old: str, new: str | None) -> str:
    if new is None:
        return old
    return new[-TAIL_BYTES:]


def _ledger(session: Session, attempt: Attempt, job: Job, site_name: str, ended: datetime, final: str) -> None:
    started = attempt.started_at or attempt.claimed_at or attempt.offered_at
    wall_s = max(0.0, (ended - started).total_seconds())
    if final == JobState.COMPLETE.value:
        learn(session, attempt.site_id, JobSpec.model_validate(job.spec), attempt.gpu_model, wall_s)
    session.add(UsageEntry(
        attempt_id=attempt.id, job_id=job.id, site=site_name, institution=job.institution, started_at=started, ended_at=ended,
        wall_s=wall_s, cpus=attempt.cpus, gpus=attempt.gpus, gpu_model=attempt.gpu_model, final_state=final,
        cost=attempt_cost(session, attempt.site_id, attempt.cpus, attempt.gpus, attempt.gpu_model, wall_s,
                          attempt.partition, attempt.node_started),
    ))  # fmt: skip


def _requeue_or_fail(session: Session, job: Job, settings: HubSettings, why: str) -> None:
    """After an attempt that was not the job's fault. Preemptions (a spot node taken away) do
    not count against ``max_attempts`` (they say nothing about the job or the site), only
    against ``max_preemptions``."""
    preempted = session.exec(
        select(func.count()).where(Attempt.job_id == job.id, Attempt.tes_state == JobState.PREEMPTED.value)
    ).one()
    failed = job.attempt - preempted
    if job.cancel_requested:
        states.move(session, job, JobState.CANCELED, f"canceled ({why})", site_id=None)
    elif preempted > settings.max_preemptions:
        states.move(session, job, JobState.SYSTEM_ERROR, f"{why}; gave up after {preempted} preemptions")
    elif failed >= settings.max_attempts:
        states.move(session, job, JobState.SYSTEM_ERROR, f"{why}; gave up after {job.attempt} attempts")
    else:
        states.move(session, job, JobState.QUEUED, f"{why}; requeued", site_id=None)


def report(session: Session, principal: Principal, attempt_id: str, r: AttemptReport, settings: HubSettings) -> ReportAck:
    attempt, job = _agent_attempt(session, principal, attempt_id)
    if r.seq <= attempt.last_seq:  # already applied: idempotent, nothing changes
        return ReportAck(
            attempt_id=attempt.id, seq=r.seq, job_state=JobState(job.state), duplicate=True, cancel=job.cancel_requested
        )
    if attempt.state != "claimed" or job.attempt != attempt.number:
        raise Conflict(
            f"attempt {attempt.number} of job {job.id} is no longer current ({attempt.state}); the report was not applied"
        )
    site = session.get(Site, attempt.site_id)
    assert site is not None
    now = utcnow()
    attempt.last_seq = r.seq
    attempt.tes_state = r.state.value
    attempt.local_id = r.local_id or attempt.local_id
    attempt.lease_expires_at = now + timedelta(seconds=lease_for(site, settings))
    if r.started_at and attempt.started_at is None:
        attempt.started_at = r.started_at
    if r.node_started is not None:
        attempt.node_started = r.node_started
    if r.tes is not None:
        record_tes_result(session, job.id, attempt.number, r.tes)
    job.stdout_tail = _tail(job.stdout_tail, r.stdout_tail)
    job.stderr_tail = _tail(job.stderr_tail, r.stderr_tail)
    session.add_all([attempt, job])
    current = JobState(job.state)
    if r.state in (JobState.INITIALIZING, JobState.RUNNING):
        if r.state is JobState.RUNNING and attempt.started_at is None:
            attempt.started_at = now
        # Progress that goes backwards (Slurm requeued a running job) is recorded on the
        # attempt but does not move the job; it is no reason to refuse the report.
        if current is not JobState.CANCELING and current is not r.state and states.can_move(current, r.state):
            states.move(
                session, job, r.state, f"{r.state.value.lower()} at {site.name}" + (f" as {r.local_id}" if r.local_id else "")
            )
    else:
        ended = r.ended_at or now
        end_state = "ended"
        states.end_attempt(session, attempt, end_state, ("claimed",), ended_at=ended, exit_code=r.exit_code, reason=r.reason)
        _ledger(session, attempt, job, site.name, ended, r.state.value)
        if r.state in (JobState.SYSTEM_ERROR, JobState.PREEMPTED):
            _requeue_or_fail(
                session,
                job,
                settings,
                f"attempt {attempt.number} at {site.name}: {r.state.value}" + (f" ({r.reason})" if r.reason else ""),
            )
        else:
            final = JobState.CANCELED if current is JobState.CANCELING and r.state is JobState.CANCELED else r.state
            reason = r.reason or (f"exit code {r.exit_code}" if r.exit_code is not None else None)
            states.move(
                session,
                job,
                final,
                f"{final.value.lower()} at {site.name}" + (f": {reason}" if reason else ""),
                exit_code=r.exit_code,
            )
    session.flush()  # before refresh, or changes no state move wrote (the output tails) are lost
    session.refresh(job)
    return ReportAck(
        attempt_id=attempt.id, seq=r.seq, job_state=JobState(job.state), duplicate=False, cancel=job.cancel_requested
    )


def _lease_renewal() -> Any:
    attempts = Attempt.__table__  # type: ignore[attr-defined]
    return (
        update(attempts)
        .where(
            attempts.c.id.in_(bindparam("b_ids", expanding=True)),
            attempts.c.site_id == bindparam("b_site_id"),
            attempts.c.state == "claimed",
        )
        .values(lease_expires_at=bindparam("b_until"))
    )


_LEASE_RENEWAL = _lease_renewal()  # built once: heartbeats execute it with their values


def renew_leases(session: Session, site_id: int, attempt_ids: list[str], lease_s: float) -> None:
    """Heartbeats renew the leases of the attempts the agent says it still holds: one UPDATE
    (an attempt of another site, or one no longer claimed, is left alone)."""
    if not attempt_ids:
        return
    until = utcnow() + timedelta(seconds=lease_s)
    session.connection().execute(_LEASE_RENEWAL, {"b_ids": attempt_ids, "b_site_id": site_id, "b_until": until})


def restart_grace(session: Session, settings: HubSettings) -> int:
    """At hub start: agents could not renew leases while the hub was down, so every held
    lease gets one full lease period from now before it can be declared lost."""
    now = utcnow()
    sites = {s.id: s for s in session.exec(select(Site))}
    held = session.exec(select(Attempt).where(Attempt.state == "claimed")).all()
    for a in held:
        until = now + timedelta(seconds=lease_for(sites[a.site_id], settings))
        if a.lease_expires_at is None or a.lease_expires_at < until:
            a.lease_expires_at = until
            session.add(a)
    # Offers likewise: the agent may have been unable to claim them.
    for a in session.exec(select(Attempt).where(Attempt.state == "offered")):
        a.offered_at = max(a.offered_at, now)
        session.add(a)
    return len(held)


def expire(session: Session, settings: HubSettings, notifier: Notifier | None, now: datetime | None = None) -> list[str]:
    """Lost attempts (lease expired) are requeued or failed; stale offers go back to the broker."""
    now = now or utcnow()
    changed = []
    lost = session.exec(select(Attempt).where(Attempt.state == "claimed", col(Attempt.lease_expires_at) < now)).all()
    for attempt in lost:
        job = session.get(Job, attempt.job_id)
        site = session.get(Site, attempt.site_id)
        assert job is not None and site is not None
        if not states.end_attempt(session, attempt, "lost", ("claimed",), ended_at=attempt.lease_expires_at or now,
                                  reason="lease expired: no heartbeat from the site"):  # fmt: skip
            continue
        _ledger(session, attempt, job, site.name, attempt.ended_at or now, "LOST")
        _requeue_or_fail(session, job, settings, f"attempt {attempt.number} lost at {site.name} (lease expired)")
        changed.append(job.id)
    stale = session.exec(
        select(Attempt).where(Attempt.state == "offered", col(Attempt.offered_at) < now - timedelta(seconds=settings.offer_ttl_s))
    ).all()
    for attempt in stale:
        job = session.get(Job, attempt.job_id)
        assert job is not None
        if states.end_attempt(session, attempt, "expired", ("offered",), reason="not claimed in time"):
            job.site_id = None
            job.state_reason = f"offer to site {attempt.site_id} was not claimed in {settings.offer_ttl_s:g}s"
            session.add(job)
            changed.append(job.id)
    session.flush()
    return changed
