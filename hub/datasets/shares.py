"""Share requests: asking for a dataset to be copied to another site.

A copy needs the consent of both sites, each recorded on its own:

- the **owner** site (``owner_decision``): its site admin (or a network admin) approves
  or denies, or its share policy approves automatically (public datasets, named partner
  institutions). An embargoed dataset is never approved automatically before its date;
  only an explicit decision by the owner can share it.
- the **receiving** site (``receiver_decision``): its site admin (or a network admin)
  approves or denies, or its share policy accepts automatically (people of its own
  institution, named institutions, inputs of jobs the broker placed there).

The request stays ``pending`` until both have approved, then it is ``approved`` and the
transfer that carries it out starts (``hub.transfers``); a denial by either side makes it
``denied``. Either site's admin, the requester or a network admin may revoke it; a revoke
or an expiry cancels the transfer and retires the copy. Every decision is an audit event:
the owner's are ``approved``/``auto-approved``/``denied``/``held``, the receiving site's
``receiver-approved``/``receiver-auto-approved``/``receiver-denied``/``receiver-held``.

Who serves the copy once both have approved: the owner site, or another site holding a
complete (AVAILABLE) replica when that would bring it sooner (the broker's estimate and
``hub.transfers`` choose alike). Data leaves a holder only where a policy its admin set lets
it leave without a person deciding, so another holder serves a copy only when (``relays``):
the dataset is not under embargo (until then only the owner, whose admin decided that copy,
serves it); the dataset is public and the holder's share policy lets public data it holds
leave without a person deciding (``serve_public_copies``: a consent of its own, apart from
``auto_approve_public``, which approves requests for the site's own public datasets; a
holder's approvals by institution are not read, as the broker's estimate does not depend on
who asks); and the holder is active and its agent online. The owner's consent still decides
whether the copy is made at all. A new policy serves nothing; the policies that existed before
the field kept what ``auto_approve_public`` let them do (migration 0023).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, Session, SQLModel, col, or_, select

from hub.auth.principal import Principal
from hub.datasets.models import Dataset, Replica
from hub.datasets.service import get_visible
from hub.errors import Conflict, Forbidden, NotFound
from hub.sites.models import Site
from hub.sites.queries import get_site_by_name
from hub.transfers import service as transfers
from hub.types import UTCDateTime, utcnow
from shared.schemas.auth import Role
from shared.schemas.datasets import (
    ShareConsent,
    ShareEvent,
    SharePolicy,
    ShareRequestCreate,
    ShareRequestPublic,
    ShareSide,
)

OWNER, RECEIVER = ShareSide.OWNER, ShareSide.RECEIVER
PENDING, APPROVED, DENIED = ShareConsent.PENDING.value, ShareConsent.APPROVED.value, ShareConsent.DENIED.value


class SharePolicyRow(SQLModel, table=True):
    __tablename__ = "share_policies"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    auto_approve_public: bool = False
    auto_approve_institutions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    accept_own_institution: bool = True
    accept_institutions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    accept_job_inputs: bool = True
    serve_public_copies: bool = False
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ShareRequest(SQLModel, table=True):
    __tablename__ = "share_requests"

    id: str = Field(primary_key=True, max_length=40)
    dataset_id: str = Field(
        sa_column=Column(String(40), ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    dest_site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    requested_by: str = Field(max_length=300, index=True)
    requester_institution: str | None = Field(default=None, max_length=200)
    purpose: str = Field(sa_column=Column(Text, nullable=False))
    lifetime_days: int
    job_id: str | None = Field(default=None, max_length=40, description="The job whose input this copy is (staging)")
    state: str = Field(default="pending", max_length=20, index=True)
    # The owner site's decision.
    owner_decision: str = Field(default=PENDING, max_length=20)
    auto_approved: bool = False
    decided_by: str | None = Field(default=None, max_length=300)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The receiving site's decision.
    receiver_decision: str = Field(default=PENDING, max_length=20)
    receiver_auto_approved: bool = False
    receiver_decided_by: str | None = Field(default=None, max_length=300)
    receiver_decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    receiver_decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ShareEventRow(SQLModel, table=True):
    __tablename__ = "share_events"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("share_requests.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=300)
    action: str = Field(max_length=30)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


_POLICY_FIELDS = (
    "auto_approve_public",
    "auto_approve_institutions",
    "accept_own_institution",
    "accept_institutions",
    "accept_job_inputs",
    "serve_public_copies",
)


def share_policy(session: Session, site_id: int) -> SharePolicy:
    row = session.get(SharePolicyRow, site_id)
    return SharePolicy() if row is None else SharePolicy.model_validate({f: getattr(row, f) for f in _POLICY_FIELDS})


def set_share_policy(session: Session, site_id: int, policy: SharePolicy) -> SharePolicy:
    row = session.get(SharePolicyRow, site_id) or SharePolicyRow(site_id=site_id)
    for f in _POLICY_FIELDS:
        setattr(row, f, getattr(policy, f))
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return share_policy(session, site_id)


def _event(session: Session, req: ShareRequest, actor: str, action: str, reason: str | None = None) -> None:
    session.add(ShareEventRow(request_id=req.id, actor=actor, action=action, reason=reason))


def _embargoed(ds: Dataset, today: date) -> bool:
    return ds.embargo_until is not None and ds.embargo_until > today


def relays(session: Session, dataset_id: str | None = None) -> dict[str, set[int]]:
    """The holders other than its owner that may serve a copy of each dataset (of ``dataset_id``
    alone, if given): see the module's docstring. One query, for the broker's views and for
    the start of each transfer alike."""
    rep, ds, site, policy = Replica, Dataset, Site, SharePolicyRow
    stmt = (
        select(rep.dataset_id, rep.site_id)
        .join(ds, col(ds.id) == rep.dataset_id)
        .join(site, col(site.id) == rep.site_id)
        .join(policy, col(policy.site_id) == rep.site_id)
        .where(
            rep.state == "AVAILABLE",
            col(rep.site_id) != col(ds.owner_site_id),
            ds.visibility == "public",
            col(policy.serve_public_copies).is_(True),
            or_(col(ds.embargo_until).is_(None), col(ds.embargo_until) <= utcnow().date()),
            site.status == "active",
            site.reachability == "online",
        )
    )
    if dataset_id is not None:
        stmt = stmt.where(rep.dataset_id == dataset_id)
    out: dict[str, set[int]] = {}
    for d, site_id in session.exec(stmt):
        out.setdefault(d, set()).add(site_id)
    return out


# -- the state machine: every decision and transition of a request goes through here -----


def decision(req: ShareRequest, side: ShareSide) -> str:
    return req.owner_decision if side is OWNER else req.receiver_decision


def awaiting(req: ShareRequest) -> list[ShareSide]:
    """The sides whose decision a pending request still waits for."""
    return [s for s in (OWNER, RECEIVER) if req.state == "pending" and decision(req, s) == PENDING]


def _record(
    session: Session, req: ShareRequest, side: ShareSide, approve: bool, actor: str, reason: str | None, auto: bool
) -> None:
    """One side's decision, audited; a denial by either side ends the request."""
    verdict, now = (APPROVED if approve else DENIED), utcnow()
    if side is OWNER:
        req.owner_decision, req.decided_by, req.decided_at, req.decision_reason = verdict, actor, now, reason
        req.auto_approved = auto
    else:
        req.receiver_decision, req.receiver_decided_by, req.receiver_decided_at = verdict, actor, now
        req.receiver_decision_reason, req.receiver_auto_approved = reason, auto
    action = ("auto-approved" if auto else "approved") if approve else "denied"
    _event(session, req, actor, action if side is OWNER else f"receiver-{action}", reason)
    if not approve:
        req.state = "denied"
    session.add(req)


def _settle(session: Session, req: ShareRequest, ds: Dataset, max_attempts: int) -> None:
    """A pending request both sides approved becomes ``approved`` and its transfer starts."""
    if req.state != "pending" or req.owner_decision != APPROVED or req.receiver_decision != APPROVED:
        return
    req.state, req.expires_at = "approved", utcnow() + timedelta(days=req.lifetime_days)
    session.add(req)
    session.flush()
    transfers.start(session, ds, req.dest_site_id, req.requested_by, max_attempts, request_id=req.id, job_id=req.job_id,
                    relays=relays(session, ds.id).get(ds.id, set()))  # fmt: skip


def _receiver_policy(session: Session, req: ShareRequest, dest: Site) -> str | None:
    """Why the receiving site's policy accepts the copy, or None when its admin must decide."""
    assert dest.id is not None
    policy = share_policy(session, dest.id)
    inst = req.requester_institution
    if req.job_id is not None and policy.accept_job_inputs:
        return f"input of job {req.job_id}, which the broker placed here under the site's lending policy"
    if policy.accept_own_institution and inst is not None and inst == dest.institution:
        return f"asked for by its own institution {inst}"
    if inst is not None and inst in policy.accept_institutions:
        return f"accepted institution {inst}"
    return None


def request_share(
    session: Session, principal: Principal, dataset_id: str, body: ShareRequestCreate, max_attempts: int
) -> ShareRequest:
    if principal.role is Role.AGENT:
        raise Forbidden("agents do not request datasets; people do")
    ds = get_visible(session, principal, dataset_id)
    dest = get_site_by_name(session, body.dest_site)
    if dest.status != "active":
        raise Conflict(f"site {dest.name} is {dest.status}; it cannot receive data")
    assert dest.id is not None
    held = session.exec(
        select(Replica).where(
            Replica.dataset_id == ds.id, Replica.site_id == dest.id, col(Replica.state).in_(("AVAILABLE", "COPYING"))
        )
    ).first()
    if held is not None:
        raise Conflict(f"site {dest.name} already holds dataset {ds.id} ({held.state})")
    open_req = session.exec(
        select(ShareRequest).where(
            ShareRequest.dataset_id == ds.id, ShareRequest.dest_site_id == dest.id, ShareRequest.state == "pending"
        )
    ).first()
    if open_req is not None:
        raise Conflict(f"request {open_req.id} for this dataset and site is already waiting for a decision")
    return create_request(
        session, ds, dest.id, principal.label(), principal.institution, body.purpose, body.lifetime_days, max_attempts
    )


def create_request(
    session: Session,
    ds: Dataset,
    dest_site_id: int,
    requested_by: str,
    institution: str | None,
    purpose: str,
    lifetime_days: int,
    max_attempts: int,
    for_job: str | None = None,
) -> ShareRequest:
    """A new request, consented to at once by each side whose policy says so: the receiving
    site's (for ``for_job``: the inputs of a job placed there), the owner's (never under embargo)."""
    req = ShareRequest(
        id=f"sr-{uuid.uuid4().hex[:16]}",
        dataset_id=ds.id,
        dest_site_id=dest_site_id,
        requested_by=requested_by,
        requester_institution=institution,
        purpose=purpose,
        lifetime_days=lifetime_days,
        job_id=for_job,
    )
    session.add(req)
    session.flush()
    _event(session, req, requested_by, "requested", purpose)
    dest = session.get(Site, dest_site_id)
    assert dest is not None
    accepted = _receiver_policy(session, req, dest)
    if accepted is not None:
        _record(session, req, RECEIVER, True, f"policy of site {dest.name}", accepted, auto=True)
    else:
        why = f"its policy does not accept copies asked for by institution {institution or '(none)'}"
        _event(session, req, f"policy of site {dest.name}", "receiver-held", f"{why}; the receiving site's admin must decide")
    owner = session.get(Site, ds.owner_site_id)
    assert owner is not None
    policy = share_policy(session, ds.owner_site_id)
    if _embargoed(ds, utcnow().date()):
        _event(session, req, f"policy of site {owner.name}", "held", f"embargoed until {ds.embargo_until}; the owner must decide")
    elif (policy.auto_approve_public and ds.visibility == "public") or (institution in policy.auto_approve_institutions):
        public = ds.visibility == "public" and policy.auto_approve_public
        why = "public dataset" if public else f"partner institution {institution}"
        _record(session, req, OWNER, True, f"policy of site {owner.name}", why, auto=True)
    _settle(session, req, ds, max_attempts)
    session.flush()
    return req


def _get(session: Session, request_id: str, lock: bool = False) -> tuple[ShareRequest, Dataset]:
    stmt = select(ShareRequest).where(ShareRequest.id == request_id)
    req = session.exec(stmt.with_for_update() if lock else stmt).first()
    if req is None:
        raise NotFound(f"no share request {request_id!r}")
    ds = session.get(Dataset, req.dataset_id)
    assert ds is not None
    return req, ds


def _may_see(principal: Principal, req: ShareRequest, ds: Dataset) -> bool:
    return (
        principal.role is Role.NETWORK_ADMIN
        or req.requested_by == principal.label()
        or (principal.role is Role.SITE_ADMIN and principal.site_id in (ds.owner_site_id, req.dest_site_id))
    )


def get_request(session: Session, principal: Principal, request_id: str) -> ShareRequest:
    req, ds = _get(session, request_id)
    if not _may_see(principal, req, ds):
        raise NotFound(f"no share request {request_id!r}")
    return req


def deciding_sides(principal: Principal, req: ShareRequest, ds: Dataset) -> list[ShareSide]:
    """The sides ``principal`` decides for: a site admin for their own site's side, a network admin for both."""
    if principal.role is Role.NETWORK_ADMIN:
        return [OWNER, RECEIVER]
    if principal.role is not Role.SITE_ADMIN or principal.site_id is None:
        return []
    return [s for s, site_id in ((OWNER, ds.owner_site_id), (RECEIVER, req.dest_site_id)) if site_id == principal.site_id]


def decide(
    session: Session,
    principal: Principal,
    request_id: str,
    approve: bool,
    reason: str | None,
    max_attempts: int,
    side: ShareSide | None = None,
) -> ShareRequest:
    """Record the caller's decision for each side they decide for (only ``side`` if given)
    that is still pending; the transfer starts once both sides have approved."""
    req, ds = _get(session, request_id, lock=True)
    if not _may_see(principal, req, ds) and principal.role is not Role.SITE_ADMIN:
        raise NotFound(f"no share request {request_id!r}")
    mine = deciding_sides(principal, req, ds)
    if not mine:
        raise Forbidden("only the owner site's admin, the receiving site's admin or a network admin decides on a share request")
    if side is not None:
        if side not in mine:
            whose = "owner site's" if side is OWNER else "receiving site's"
            raise Forbidden(f"only the {whose} admin or a network admin decides for the {side.value} of share request {req.id}")
        mine = [side]
    if req.state != "pending":
        raise Conflict(f"share request {req.id} is {req.state}, not pending")
    todo = [s for s in mine if decision(req, s) == PENDING]
    if not todo:
        done = ", ".join(f"the {s.value} has {decision(req, s)}" for s in mine)
        left = " and ".join(s.value for s in awaiting(req))
        raise Conflict(f"share request {req.id}: {done}; it waits for the {left}")
    for s in todo:
        _record(session, req, s, approve, principal.label(), reason, auto=False)
        if not approve:
            break
    _settle(session, req, ds, max_attempts)
    session.flush()
    return req


def _retire_replica(session: Session, req: ShareRequest) -> None:
    """The copy made under a request goes when the request does, and so does its transfer."""
    transfers.cancel_for_request(session, req.id, f"share request {req.state}")
    for rep in session.exec(select(Replica).where(Replica.dataset_id == req.dataset_id, Replica.site_id == req.dest_site_id)):
        if rep.state in ("COPYING", "UNAVAILABLE"):  # never completed: nothing in place to remove
            session.delete(rep)
        else:  # the site's agent removes the copy, then the replica
            rep.state = "DELETING"
            session.add(rep)


def revoke(session: Session, principal: Principal, request_id: str, reason: str | None) -> ShareRequest:
    """Withdraw a request or an approval: the requester, either site's admin, a network admin."""
    req, ds = _get(session, request_id, lock=True)
    if not _may_see(principal, req, ds):
        raise NotFound(f"no share request {request_id!r}")
    if req.state not in ("pending", "approved"):
        raise Conflict(f"share request {req.id} is {req.state}; there is nothing to revoke")
    req.state = "revoked"
    session.add(req)
    _event(session, req, principal.label(), "revoked", reason)
    _retire_replica(session, req)
    session.flush()
    return req


def expire_shares(session: Session, now: datetime | None = None) -> list[str]:
    now = now or utcnow()
    out = []
    for req in session.exec(select(ShareRequest).where(ShareRequest.state == "approved", col(ShareRequest.expires_at) < now)):
        req.state = "expired"
        session.add(req)
        _event(session, req, "hub", "expired", f"lifetime of {req.lifetime_days} days ended")
        _retire_replica(session, req)
        out.append(req.id)
    session.flush()
    return out


def may_decide(principal: Principal, req: ShareRequest, ds: Dataset) -> bool:
    """Whether a decision of ``principal`` is awaited on ``req`` now."""
    return any(s in awaiting(req) for s in deciding_sides(principal, req, ds))


def list_requests(session: Session, principal: Principal, state: str | None, awaiting_me: bool) -> list[ShareRequest]:
    stmt = select(ShareRequest, Dataset).join(Dataset, col(Dataset.id) == ShareRequest.dataset_id)
    if state:
        stmt = stmt.where(ShareRequest.state == state)
    rows = session.exec(stmt.order_by(col(ShareRequest.created_at).desc())).all()
    out = []
    for req, ds in rows:
        if awaiting_me:
            if may_decide(principal, req, ds):
                out.append(req)
        elif _may_see(principal, req, ds):
            out.append(req)
    return out


def to_public(session: Session, req: ShareRequest) -> ShareRequestPublic:
    ds = session.get(Dataset, req.dataset_id)
    owner = session.get(Site, ds.owner_site_id) if ds else None
    dest = session.get(Site, req.dest_site_id)
    assert ds is not None and owner is not None and dest is not None
    events = session.exec(select(ShareEventRow).where(ShareEventRow.request_id == req.id).order_by(col(ShareEventRow.id))).all()
    data: dict[str, Any] = {
        **req.model_dump(exclude={"dataset_id", "dest_site_id", "job_id"}),
        "job": req.job_id,
        "dataset": ds.id,
        "dataset_title": ds.title,
        "owner_site": owner.name,
        "dest_site": dest.name,
        "events": [ShareEvent(at=e.at, actor=e.actor, action=e.action, reason=e.reason) for e in events],
    }
    return ShareRequestPublic.model_validate(data)
