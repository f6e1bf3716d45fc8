"""Integrity audits: each agent re-checks the replicas at its site and the hub records it.

A replica with a missing, unexpected, wrong-sized or corrupt file becomes ``BAD`` with the
reason, so the broker no longer counts it and transfers no longer copy from it; a later
clean audit (after the site repaired it) makes it ``AVAILABLE`` again.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets.files import manifest_of
from hub.datasets.models import Dataset, Replica
from hub.errors import Conflict, NotFound
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.datasets import AuditReport, ReplicaState, ReplicaWork

log = logging.getLogger("cryomesh.hub.audits")

AUDITED = (ReplicaState.AVAILABLE.value, ReplicaState.BAD.value)


def replicas_at(session: Session, site: Site, states: tuple[str, ...] = AUDITED) -> list[ReplicaWork]:
    rows = session.exec(
        select(Replica, Dataset)
        .join(Dataset, col(Dataset.id) == Replica.dataset_id)
        .where(Replica.site_id == site.id, col(Replica.state).in_(states))
        .order_by(col(Replica.audited_at).is_(None).desc(), col(Replica.audited_at))
    ).all()
    return [
        ReplicaWork(
            dataset=ds.id,
            state=ReplicaState(rep.state),
            location=rep.location,
            verified_at=rep.verified_at,
            manifest=manifest_of(session, ds),
        )
        for rep, ds in rows
    ]


def record(session: Session, principal: Principal, site: Site, dataset_id: str, report: AuditReport) -> Replica:
    rep = session.exec(select(Replica).where(Replica.dataset_id == dataset_id, Replica.site_id == site.id)).first()
    if rep is None:
        raise NotFound(f"site {site.name} holds no replica of {dataset_id!r}")
    if rep.state not in AUDITED:
        raise Conflict(f"the replica is {rep.state}; only AVAILABLE and BAD replicas are audited")
    now = utcnow()
    rep.audited_at = now
    if report.clean:
        if rep.state == ReplicaState.BAD.value:
            log.info("replica of %s at %s is whole again", dataset_id, site.name)
        rep.state, rep.state_reason, rep.verified_at = ReplicaState.AVAILABLE.value, None, now
    else:
        rep.state, rep.state_reason = ReplicaState.BAD.value, f"audit {now:%Y-%m-%d %H:%M} UTC: {report.summary()}"[:4000]
        log.warning("replica of %s at %s is BAD: %s", dataset_id, site.name, report.summary())
    session.add(rep)
    session.flush()
    return rep


def deleted(session: Session, site: Site, dataset_id: str) -> None:
    """The agent removed a retired copy (DELETING): the replica is gone from the catalog."""
    rep = session.exec(select(Replica).where(Replica.dataset_id == dataset_id, Replica.site_id == site.id)).first()
    if rep is None:
        raise NotFound(f"site {site.name} holds no replica of {dataset_id!r}")
    if rep.state != ReplicaState.DELETING.value:
        raise Conflict(f"the replica is {rep.state}; only a DELETING replica is removed")
    session.delete(rep)
    session.flush()
    log.info("replica of %s at %s deleted", dataset_id, site.name)
