"""Transfers on the hub: created from approved share requests, driven by the agents' reports.

The hub never touches the data. It tells the source agent what to publish and the
destination agent what to fetch, records their progress, re-queues a transfer that makes
no progress (the agents resume from the parts they recorded on disk), and suspends it with
the reason after ``max_attempts``. A file the destination finds corrupt is put on the
``republish`` list; the source sends it again, up to ``transfer_max_republish`` times.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, and_, col, or_, select

from hub.auth.principal import Principal
from hub.broker.rules import fastest_source
from hub.datasets.files import manifest_of
from hub.datasets.models import Dataset, Replica
from hub.datasets.service import resolve_id as resolve_dataset_id
from hub.errors import Conflict, Forbidden, NotFound
from hub.metrics import TRANSFER_BYTES
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.transfers.links import in_flight_from, in_flight_to, rates_to, uplinks_shared
from hub.transfers.models import Transfer
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.datasets import ReplicaState
from shared.schemas.transfers import (
    ACTIVE_TRANSFER_STATES,
    ExchangeAccess,
    FileError,
    TransferFailure,
    TransferProgress,
    TransferPublic,
    TransferState,
    TransferWork,
)

log = logging.getLogger("cryomesh.hub.transfers")

S = TransferState
ACTIVE = [s.value for s in ACTIVE_TRANSFER_STATES]
#: The most per-file errors kept on a transfer (the newest).
MAX_FILE_ERRORS = 200


def _set_replica(session: Session, dataset_id: str, site_id: int, state: ReplicaState, location: str | None = None) -> Replica:
    rep = session.exec(select(Replica).where(Replica.dataset_id == dataset_id, Replica.site_id == site_id)).first()
    if rep is None:
        rep = Replica(dataset_id=dataset_id, site_id=site_id, state=state.value, location=location or "(copying)")
    rep.state = state.value
    if location is not None:
        rep.location = location
    session.add(rep)
    return rep


def start(
    session: Session,
    dataset: Dataset,
    dest_site_id: int,
    requested_by: str,
    max_attempts: int,
    request_id: str | None = None,
    job_id: str | None = None,
    relays: Collection[int] = (),
) -> Transfer:
    """A transfer of ``dataset`` to ``dest_site_id`` from a site holding it AVAILABLE that may
    serve it: its owner, or one of ``relays`` (the holders its sharing rules let serve it,
    hub/datasets/shares.py ``relays``); of those, the one that brings it soonest by the measured
    throughput of each link net of the transfers under way on it (out of the holder to any
    site, with uplinks shared: hub/transfers/links.py), the owner on a tie
    (``rules.fastest_source``, as the broker estimated the copy when it placed a job there)."""
    held = {
        r.site_id: r
        for r in session.exec(
            select(Replica).where(Replica.dataset_id == dataset.id, Replica.state == ReplicaState.AVAILABLE.value)
        )
        if r.site_id != dest_site_id and (r.site_id == dataset.owner_site_id or r.site_id in relays)
    }
    ahead = in_flight_from(session, held, dest_site_id) if uplinks_shared(session) else in_flight_to(session, dest_site_id)
    source_id, _ = fastest_source(
        dataset.total_bytes, dest_site_id, held, dataset.owner_site_id,
        rates_to(session, dest_site_id, utcnow()), ahead,
    )  # fmt: skip
    source = held.get(source_id) if source_id is not None else None
    t = Transfer(
        id=f"tr-{uuid.uuid4().hex[:16]}",
        request_id=request_id,
        job_id=job_id,
        requested_by=requested_by,
        dataset_id=dataset.id,
        source_site_id=source.site_id if source else dataset.owner_site_id,
        dest_site_id=dest_site_id,
        source_location=source.location if source else "",
        max_attempts=max_attempts,
        files_total=dataset.file_count,
        bytes_total=dataset.total_bytes,
    )
    if source:
        _set_replica(session, dataset.id, dest_site_id, ReplicaState.COPYING)
    else:
        t.state, t.finished_at = S.SUSPENDED.value, utcnow()
        t.reason = "no site that may serve it holds an AVAILABLE replica to copy from" + (
            " (other holders' sharing rules do not let them serve it)" if _held_elsewhere(session, dataset, dest_site_id) else ""
        )
    session.add(t)
    session.flush()
    log.info("transfer %s of %s created (%s, from site %s)", t.id, dataset.id, t.state, t.source_site_id)
    return t


def _held_elsewhere(session: Session, dataset: Dataset, dest_site_id: int) -> bool:
    """Whether a site other than the owner and the destination holds the dataset AVAILABLE."""
    return (
        session.exec(
            select(Replica.site_id).where(
                Replica.dataset_id == dataset.id,
                Replica.state == ReplicaState.AVAILABLE.value,
                col(Replica.site_id).not_in([dataset.owner_site_id, dest_site_id]),
            )
        ).first()
        is not None
    )


def cancel_for_request(session: Session, request_id: str, why: str) -> None:
    for t in session.exec(select(Transfer).where(Transfer.request_id == request_id, col(Transfer.state).in_(ACTIVE))):
        t.state, t.reason, t.finished_at, t.updated_at = S.CANCELLED.value, why, utcnow(), utcnow()
        session.add(t)


def _locked(session: Session, transfer_id: str) -> Transfer:
    t = session.exec(select(Transfer).where(Transfer.id == transfer_id).with_for_update()).first()
    if t is None:
        raise NotFound(f"no transfer {transfer_id!r}")
    return t


def _role(principal: Principal, t: Transfer) -> str:
    if principal.role is not Role.AGENT:
        raise Forbidden("only the agents of the two sites report on a transfer")
    if principal.site_id == t.source_site_id:
        return "source"
    if principal.site_id == t.dest_site_id:
        return "dest"
    raise NotFound(f"no transfer {t.id!r}")


def _check_attempt(t: Transfer, attempt: int) -> None:
    if S(t.state).final:
        raise Conflict(f"transfer {t.id} is {t.state}")
    if attempt != t.attempt:
        raise Conflict(f"attempt {attempt} of transfer {t.id} is superseded by attempt {t.attempt}")


def _add_errors(t: Transfer, errors: list[FileError]) -> None:
    if errors:
        now = utcnow()
        new = [{**e.model_dump(mode="json"), "at": (e.at or now).isoformat()} for e in errors]
        t.file_errors = (list(t.file_errors) + new)[-MAX_FILE_ERRORS:]


def _retry_or_suspend(session: Session, t: Transfer, reason: str) -> None:
    """Another attempt (agents resume from what they recorded), or SUSPENDED after the last."""
    now = utcnow()
    t.reason, t.updated_at, t.last_progress_at = reason, now, now
    if t.attempt >= t.max_attempts:
        t.state, t.finished_at = S.SUSPENDED.value, now
        t.reason = f"suspended after {t.attempt} attempt(s): {reason}"
        _set_replica(session, t.dataset_id, t.dest_site_id, ReplicaState.UNAVAILABLE)
        log.warning("transfer %s suspended: %s", t.id, reason)
    else:
        t.attempt += 1
        t.state, t.access = S.QUEUED.value, None
        log.info("transfer %s: attempt %d after: %s", t.id, t.attempt, reason)
    session.add(t)


def progress(session: Session, principal: Principal, transfer_id: str, body: TransferProgress, settings: HubSettings) -> Transfer:
    t = _locked(session, transfer_id)
    role = _role(principal, t)
    _check_attempt(t, body.attempt)
    now = utcnow()
    moved = False
    _add_errors(t, body.file_errors)
    t.rate_bps = body.rate_bps
    t.resent_bytes = max(t.resent_bytes, body.resent_bytes)
    moved_bytes = body.bytes_done - (t.published_bytes if role == "source" else t.fetched_bytes)
    if moved_bytes > 0:
        TRANSFER_BYTES.labels("publish" if role == "source" else "fetch").inc(moved_bytes)
    if role == "source":
        if body.corrupt or body.location:
            raise Conflict("only the destination reports corrupt files and the replica's location")
        if body.bytes_done > t.published_bytes or body.files_done > t.published_files:
            moved = True
        t.published_bytes, t.published_files = min(body.bytes_done, t.bytes_total), min(body.files_done, t.files_total)
        if t.state == S.QUEUED.value:
            t.state, moved = S.PUBLISHING.value, True
        if body.access is not None:
            t.access = body.access.model_dump(mode="json")
        if body.republished:
            done = set(body.republished)
            t.republish = [p for p in t.republish if p not in done]
            t.resent_files = {**t.resent_files, **{p: t.resent_files.get(p, 0) + 1 for p in done}}
            moved = True
        if body.done:
            if body.access is None and t.access is None:
                raise Conflict("a finished publish must say how to read it (access)")
            if t.state == S.PUBLISHING.value:
                t.state, moved = S.FETCHING.value, True
    else:
        if body.republished or body.access:
            raise Conflict("only the source publishes")
        if t.state != S.FETCHING.value:
            raise Conflict(f"transfer {t.id} is {t.state}; nothing to fetch yet")
        if body.bytes_done > t.fetched_bytes or body.files_done > t.fetched_files:
            moved = True
        t.fetched_bytes, t.fetched_files = min(body.bytes_done, t.bytes_total), min(body.files_done, t.files_total)
        if body.corrupt:
            moved = True
            counts = dict(t.republish_counts)
            for path in body.corrupt:
                counts[path] = counts.get(path, 0) + 1
            t.republish_counts = counts
            worst = max(body.corrupt, key=lambda p: counts[p])
            if counts[worst] > settings.transfer_max_republish:
                t.republish = []
                _retry_or_suspend(session, t, f"{worst} failed its checks {counts[worst]} times")
                session.flush()
                return t
            t.republish = sorted(set(t.republish) | set(body.corrupt))
        if body.done:
            if t.republish:
                raise Conflict(f"{len(t.republish)} file(s) wait to be sent again; the copy is not complete")
            if not body.location:
                raise Conflict("a finished copy must say where it lives (location)")
            if body.files_done != t.files_total or body.bytes_done != t.bytes_total:
                raise Conflict(f"the copy holds {body.files_done}/{t.files_total} files, {body.bytes_done}/{t.bytes_total} bytes")
            t.state, t.finished_at, t.reason, t.rate_bps = S.DONE.value, now, None, body.rate_bps
            rep = _set_replica(session, t.dataset_id, t.dest_site_id, ReplicaState.AVAILABLE, body.location)
            rep.verified_at = now
            moved = True
            log.info("transfer %s done: %d files, %d bytes verified at the destination", t.id, t.files_total, t.bytes_total)
    if moved:
        t.last_progress_at = now
    t.updated_at = now
    session.add(t)
    session.flush()
    return t


def fail(session: Session, principal: Principal, transfer_id: str, body: TransferFailure) -> Transfer:
    t = _locked(session, transfer_id)
    role = _role(principal, t)
    _check_attempt(t, body.attempt)
    _add_errors(t, body.file_errors)
    _retry_or_suspend(session, t, f"{role}: {body.reason}")
    session.flush()
    return t


def cleaned(session: Session, principal: Principal, transfer_id: str) -> Transfer:
    t = _locked(session, transfer_id)
    if _role(principal, t) != "source":
        raise Forbidden("only the source site's agent cleans the exchange store")
    t.exchange_cleaned = True
    session.add(t)
    session.flush()
    return t


def retry(session: Session, principal: Principal, transfer_id: str) -> Transfer:
    """Start a SUSPENDED transfer again, with a fresh budget of attempts."""
    t = _locked(session, transfer_id)
    if not _may_see(principal, t) or (principal.role is Role.RESEARCHER and t.requested_by != principal.label()):
        raise NotFound(f"no transfer {transfer_id!r}")
    if principal.role is Role.RESEARCHER:
        raise Forbidden("a suspended transfer is restarted by an admin of either site or a network admin")
    if t.state != S.SUSPENDED.value:
        raise Conflict(f"transfer {t.id} is {t.state}; only a SUSPENDED transfer is retried")
    if not t.source_location:
        raise Conflict("no site holds an AVAILABLE replica to copy from")
    now = utcnow()
    t.state, t.finished_at, t.access, t.republish, t.republish_counts = S.QUEUED.value, None, None, [], {}
    t.max_attempts, t.attempt = t.attempt + t.max_attempts, t.attempt + 1
    t.reason, t.updated_at, t.last_progress_at = f"retried by {principal.label()}", now, now
    _set_replica(session, t.dataset_id, t.dest_site_id, ReplicaState.COPYING)
    session.add(t)
    session.flush()
    return t


def stalled(session: Session, settings: HubSettings, now: datetime | None = None) -> list[str]:
    """Re-queue (or suspend) active transfers with no progress for ``transfer_stall_s``."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.transfer_stall_s)
    out = []
    for t in session.exec(select(Transfer).where(col(Transfer.state).in_(ACTIVE), col(Transfer.last_progress_at) < cutoff)):
        _retry_or_suspend(session, t, f"no progress for {settings.transfer_stall_s:g} s in {t.state}")
        out.append(t.id)
    session.flush()
    return out


# -- reading -------------------------------------------------------------------------


def _may_see(principal: Principal, t: Transfer) -> bool:
    return (
        principal.role is Role.NETWORK_ADMIN
        or t.requested_by == principal.label()
        or (principal.role in (Role.SITE_ADMIN, Role.AGENT) and principal.site_id in (t.source_site_id, t.dest_site_id))
    )


def get(session: Session, principal: Principal, transfer_id: str) -> Transfer:
    t = session.get(Transfer, transfer_id)
    if t is None or not _may_see(principal, t):
        raise NotFound(f"no transfer {transfer_id!r}")
    return t


def list_for(session: Session, principal: Principal, state: str | None, dataset: str | None, limit: int) -> list[Transfer]:
    stmt = select(Transfer)
    if principal.role is not Role.NETWORK_ADMIN:
        mine = col(Transfer.requested_by) == principal.label()
        if principal.site_id is not None and principal.role is Role.SITE_ADMIN:
            mine = or_(mine, Transfer.source_site_id == principal.site_id, Transfer.dest_site_id == principal.site_id)
        stmt = stmt.where(mine)
    if state:
        stmt = stmt.where(Transfer.state == state)
    if dataset:
        stmt = stmt.where(Transfer.dataset_id == resolve_dataset_id(session, principal, dataset))
    return list(session.exec(stmt.order_by(col(Transfer.created_at).desc()).limit(limit)))


def site_names(session: Session) -> dict[int | None, str]:
    """Site id -> name, read once for a list of transfers."""
    return {s.id: s.name for s in session.exec(select(Site))}


def to_public(session: Session, t: Transfer, names: dict[int | None, str] | None = None) -> TransferPublic:
    names = names or site_names(session)
    data: dict[str, Any] = {
        **t.model_dump(
            exclude={"request_id", "job_id", "dataset_id", "source_site_id", "dest_site_id", "access", "republish_counts"}
        ),
        "share_request": t.request_id,
        "job": t.job_id,
        "dataset": t.dataset_id,
        "source_site": names[t.source_site_id],
        "dest_site": names[t.dest_site_id],
    }
    return TransferPublic.model_validate(data)


def work_for(session: Session, principal: Principal, site: Site) -> list[TransferWork]:
    """The transfers this site's agent has a part in now."""
    assert site.id is not None
    rows = session.exec(
        select(Transfer).where(
            or_(Transfer.source_site_id == site.id, Transfer.dest_site_id == site.id),
            or_(
                col(Transfer.state).in_(ACTIVE),
                and_(col(Transfer.source_site_id) == site.id, col(Transfer.exchange_cleaned).is_(False)),
            ),
        )
    ).all()
    names = site_names(session)
    out = []
    for t in rows:
        ds = session.get(Dataset, t.dataset_id)
        assert ds is not None
        manifest = manifest_of(session, ds)
        public = to_public(session, t, names)
        if t.source_site_id == site.id:
            out.append(
                TransferWork(
                    transfer=public,
                    role="source",
                    manifest=manifest,
                    source_location=t.source_location,
                    cleanup=S(t.state).final,
                )
            )
        if t.dest_site_id == site.id and t.state == S.FETCHING.value:
            access = ExchangeAccess.model_validate(t.access) if t.access else None
            out.append(TransferWork(transfer=public, role="dest", manifest=manifest, access=access))
    return out
