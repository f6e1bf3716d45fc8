"""Jobs meet data: a job placed at a site that lacks its inputs waits for them there.

The broker prefers sites holding the inputs (``locality`` in the score). When it places a
job elsewhere, the attempt is ``staging`` and the job ``INITIALIZING``: a share request
per missing dataset goes to the owner site, in the job owner's name, approved at once
only where the owner's share policy allows; otherwise it waits for the owner's admin. Each
sweep looks again: once every input is AVAILABLE at the site, the attempt becomes an
ordinary offer and the agent starts it. If a copy is refused or fails for good (request
denied, revoked or expired; transfer suspended or cancelled), the attempt ends as refused
and the broker places the job again, avoiding that site.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, col, select

from hub.datasets.models import Dataset, Replica
from hub.datasets.shares import ShareRequest, create_request
from hub.db import after_commit
from hub.jobs import states
from hub.jobs.models import Attempt, Job
from hub.jobs.notify import Notifier
from hub.settings import DEFAULT_TRANSFER_ATTEMPTS
from hub.sites.models import Site
from hub.transfers.models import Transfer
from hub.types import utcnow
from shared.schemas.datasets import ReplicaState
from shared.schemas.jobs import JobSpec, JobState
from shared.schemas.transfers import ACTIVE_TRANSFER_STATES

log = logging.getLogger("cryomesh.hub.staging")

#: How long a copy made for a job may be kept.
INPUT_COPY_DAYS = 30
_ACTIVE = [s.value for s in ACTIVE_TRANSFER_STATES]


def missing_inputs(session: Session, spec: JobSpec, site_id: int) -> list[Dataset]:
    if not spec.inputs:
        return []
    ids = [d.dataset for d in spec.inputs]
    held = set(
        session.exec(
            select(Replica.dataset_id).where(
                col(Replica.dataset_id).in_(ids), Replica.site_id == site_id, Replica.state == ReplicaState.AVAILABLE.value
            )
        )
    )
    out = []
    for ds_id in dict.fromkeys(ids):
        if ds_id not in held:
            ds = session.get(Dataset, ds_id)
            if ds is not None:
                out.append(ds)
    return out


def input_paths(session: Session, spec: JobSpec, site_id: int) -> dict[str, str]:
    """Where each input lives at the site (for the executor)."""
    ids = [d.dataset for d in spec.inputs]
    if not ids:
        return {}
    rows = session.exec(
        select(Replica).where(
            col(Replica.dataset_id).in_(ids), Replica.site_id == site_id, Replica.state == ReplicaState.AVAILABLE.value
        )
    )
    return {r.dataset_id: r.location for r in rows}


def _copy_under_way(session: Session, ds_id: str, site_id: int) -> str | None:
    t = session.exec(
        select(Transfer).where(Transfer.dataset_id == ds_id, Transfer.dest_site_id == site_id, col(Transfer.state).in_(_ACTIVE))
    ).first()
    if t is not None:
        return f"{ds_id} is being copied (transfer {t.id}, {t.state})"
    req = session.exec(
        select(ShareRequest).where(
            ShareRequest.dataset_id == ds_id, ShareRequest.dest_site_id == site_id, ShareRequest.state == "pending"
        )
    ).first()
    if req is not None:
        return f"{ds_id} waits for its owner site to approve share request {req.id}"
    return None


def stage(session: Session, job: Job, attempt: Attempt, spec: JobSpec, site_name: str) -> bool:
    """Hold ``attempt`` while its missing inputs are copied to the site; False if none are missing."""
    missing = missing_inputs(session, spec, attempt.site_id)
    if not missing:
        return False
    notes = []
    for ds in missing:
        note = _copy_under_way(session, ds.id, attempt.site_id)
        if note is None:
            req = create_request(
                session, ds, attempt.site_id, job.owner, job.institution, f"input of job {job.id}", INPUT_COPY_DAYS,
                DEFAULT_TRANSFER_ATTEMPTS,
            )  # fmt: skip
            for t in session.exec(select(Transfer).where(Transfer.request_id == req.id)):
                t.job_id = job.id
                session.add(t)
            note = _copy_under_way(session, ds.id, attempt.site_id) or f"{ds.id}: share request {req.id} is {req.state}"
        notes.append(note)
    attempt.state = "staging"
    session.add(attempt)
    session.flush()
    states.move(session, job, JobState.INITIALIZING, f"waiting for input data at {site_name}: " + "; ".join(notes))
    return True


def _dead_end(session: Session, ds_id: str, site_id: int) -> str | None:
    """Why a missing input will not arrive by itself, or None while a copy is pending or under way."""
    if _copy_under_way(session, ds_id, site_id):
        return None
    t = session.exec(
        select(Transfer)
        .where(Transfer.dataset_id == ds_id, Transfer.dest_site_id == site_id)
        .order_by(col(Transfer.created_at).desc())
    ).first()
    req = session.exec(
        select(ShareRequest)
        .where(ShareRequest.dataset_id == ds_id, ShareRequest.dest_site_id == site_id)
        .order_by(col(ShareRequest.created_at).desc())
    ).first()
    if req is not None and req.state in ("denied", "revoked", "expired"):
        return f"the share request for {ds_id} was {req.state}" + (f": {req.decision_reason}" if req.decision_reason else "")
    if t is not None and t.state in ("SUSPENDED", "CANCELLED"):
        return f"the copy of {ds_id} was {t.state.lower()}: {t.reason}"
    return f"no copy of {ds_id} is under way"


def advance(session: Session, notifier: Notifier | None, now: datetime | None = None) -> list[str]:
    """Offer staged attempts whose inputs have arrived; send back those whose copies failed."""
    now = now or utcnow()
    changed = []
    for attempt in session.exec(select(Attempt).where(Attempt.state == "staging")).all():
        job = session.get(Job, attempt.job_id)
        site = session.get(Site, attempt.site_id)
        assert job is not None and site is not None
        spec = JobSpec.model_validate(job.spec)
        missing = missing_inputs(session, spec, attempt.site_id)
        if not missing:
            attempt.state, attempt.offered_at = "offered", now
            job.state_reason, job.updated_at = f"inputs are at {site.name}; offered to its agent", now
            session.add_all([attempt, job])
            if notifier is not None:
                site_id = site.id
                assert site_id is not None
                after_commit(session, lambda site_id=site_id: notifier.notify(site_id))  # type: ignore[misc]
            log.info("job %s: inputs at %s, offered", job.id, site.name)
            changed.append(job.id)
            continue
        why = next((w for w in (_dead_end(session, ds.id, attempt.site_id) for ds in missing) if w), None)
        if why is not None and states.end_attempt(session, attempt, "refused", ("staging",), reason=why):
            states.move(session, job, JobState.QUEUED, f"input data cannot reach {site.name}: {why}", site_id=None)
            log.info("job %s: %s; placing it again", job.id, why)
            changed.append(job.id)
    session.flush()
    return changed
