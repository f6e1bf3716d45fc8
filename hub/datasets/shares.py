"""Share requests: asking for a dataset to be copied to another site.

The owner site decides: its site admin (or a network admin) approves or denies, or the
site's share policy approves automatically (public datasets, named partner
institutions). An embargoed dataset is never approved automatically before its date; only
an explicit decision by the owner can share it. Every step is an audit event.

An approval starts the transfer that carries it out (``hub.transfers``); a revoke or an
expiry cancels it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, Session, SQLModel, col, select

from hub.auth.principal import Principal
from hub.datasets.models import Dataset, Replica
from hub.datasets.service import get_visible
from hub.errors import Conflict, Forbidden, NotFound
from hub.sites.models import Site
from hub.sites.queries import get_site_by_name
from hub.transfers import service as transfers
from hub.types import UTCDateTime, utcnow
from shared.schemas.auth import Role
from shared.schemas.datasets import ShareEvent, SharePolicy, ShareRequestCreate, ShareRequestPublic


class SharePolicyRow(SQLModel, table=True):
    __tablename__ = "share_policies"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    auto_approve_public: bool = False
    auto_approve_institutions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
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
    state: str = Field(default="pending", max_length=20, index=True)
    auto_approved: bool = False
    decided_by: str | None = Field(default=None, max_length=300)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
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


def share_policy(session: Session, site_id: int) -> SharePolicy:
    row = session.get(SharePolicyRow, site_id)
    return (
        SharePolicy()
        if row is None
        else SharePolicy(auto_approve_public=row.auto_approve_public, auto_approve_institutions=row.auto_approve_institutions)
    )


def set_share_policy(session: Session, site_id: int, policy: SharePolicy) -> SharePolicy:
    row = session.get(SharePolicyRow, site_id) or SharePolicyRow(site_id=site_id)
    row.auto_approve_public, row.auto_approve_institutions, row.updated_at = (
        policy.auto_approve_public,
        policy.auto_approve_institutions,
        utcnow(),
    )
    session.add(row)
    session.flush()
    return share_policy(session, site_id)


def _event(session: Session, req: ShareRequest, actor: str, action: str, reason: str | None = None) -> None:
    session.add(ShareEventRow(request_id=req.id, actor=actor, action=action, reason=reason))


def _embargoed(ds: Dataset, today: date) -> bool:
    return ds.embargo_until is not None and ds.embargo_until > today


def _approve(
    session: Session, req: ShareRequest, ds: Dataset, actor: str, reason: str | None, auto: bool, max_attempts: int
) -> None:
    now = utcnow()
    req.state, req.decided_by, req.decided_at, req.decision_reason, req.auto_approved = "approved", actor, now, reason, auto
    req.expires_at = now + timedelta(days=req.lifetime_days)
    session.add(req)
    _event(session, req, actor, "auto-approved" if auto else "approved", reason)
    session.flush()
    transfers.start(session, ds, req.dest_site_id, req.requested_by, max_attempts, request_id=req.id)


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
) -> ShareRequest:
    """A new request, approved at once where the owner's policy says so (never under embargo)."""
    req = ShareRequest(
        id=f"sr-{uuid.uuid4().hex[:16]}",
        dataset_id=ds.id,
        dest_site_id=dest_site_id,
        requested_by=requested_by,
        requester_institution=institution,
        purpose=purpose,
        lifetime_days=lifetime_days,
    )
    session.add(req)
    session.flush()
    _event(session, req, requested_by, "requested", purpose)
    owner = session.get(Site, ds.owner_site_id)
    assert owner is not None
    policy = share_policy(session, ds.owner_site_id)
    if _embargoed(ds, utcnow().date()):
        _event(session, req, f"policy of site {owner.name}", "held", f"embargoed until {ds.embargo_until}; the owner must decide")
    elif (policy.auto_approve_public and ds.visibility == "public") or (institution in policy.auto_approve_institutions):
        public = ds.visibility == "public" and policy.auto_approve_public
        why = "public dataset" if public else f"partner institution {institution}"
        _approve(session, req, ds, f"policy of site {owner.name}", why, auto=True, max_attempts=max_attempts)
    session.flush()
    return req


def _get(session: Session, request_id: str) -> tuple[ShareRequest, Dataset]:
    req = session.get(ShareRequest, request_id)
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


def decide(
    session: Session, principal: Principal, request_id: str, approve: bool, reason: str | None, max_attempts: int
) -> ShareRequest:
    req, ds = _get(session, request_id)
    if not _may_see(principal, req, ds) and principal.role is not Role.SITE_ADMIN:
        raise NotFound(f"no share request {request_id!r}")
    owner_admin = principal.role is Role.SITE_ADMIN and principal.site_id == ds.owner_site_id
    if not (principal.role is Role.NETWORK_ADMIN or owner_admin):
        raise Forbidden("only the owner site's admin or a network admin decides on a share request")
    if req.state != "pending":
        raise Conflict(f"share request {req.id} is {req.state}, not pending")
    if approve:
        _approve(session, req, ds, principal.label(), reason, auto=False, max_attempts=max_attempts)
    else:
        req.state, req.decided_by, req.decided_at, req.decision_reason = "denied", principal.label(), utcnow(), reason
        session.add(req)
        _event(session, req, principal.label(), "denied", reason)
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
    req, ds = _get(session, request_id)
    if not _may_see(principal, req, ds):
        raise NotFound(f"no share request {request_id!r}")
    if principal.role is Role.SITE_ADMIN and principal.site_id == req.dest_site_id and req.requested_by != principal.label():
        raise Forbidden("the receiving site's admin cannot revoke; the requester or the owner site can")
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


def list_requests(session: Session, principal: Principal, state: str | None, awaiting_me: bool) -> list[ShareRequest]:
    stmt = select(ShareRequest, Dataset).join(Dataset, col(Dataset.id) == ShareRequest.dataset_id)
    if state:
        stmt = stmt.where(ShareRequest.state == state)
    rows = session.exec(stmt.order_by(col(ShareRequest.created_at).desc())).all()
    out = []
    for req, ds in rows:
        if awaiting_me:
            deciding = principal.role is Role.NETWORK_ADMIN or (
                principal.role is Role.SITE_ADMIN and principal.site_id == ds.owner_site_id
            )
            if deciding and req.state == "pending":
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
        **req.model_dump(exclude={"dataset_id", "dest_site_id"}),
        "dataset": ds.id,
        "dataset_title": ds.title,
        "owner_site": owner.name,
        "dest_site": dest.name,
        "events": [ShareEvent(at=e.at, actor=e.actor, action=e.action, reason=e.reason) for e in events],
    }
    return ShareRequestPublic.model_validate(data)
