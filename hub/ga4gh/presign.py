"""DRS ``https`` access to replicas in a site's S3 bucket: the site's agent signs the URL.

Why the agent and not the hub: the hub holds no storage credentials (docs/security.md), and
a site decides what leaves it. Presigning needs the bucket's secret key; at the hub that key
would let anyone who takes the hub read (or, with a careless policy, write) the bucket, and
would have to be handed over and rotated by every site. The agent already has it (its S3
exchange and TES staging use the site's usual AWS chain), signs only for the buckets its
admin lists (``[drs] presign_buckets``), and gives URLs of at most its own ``presign_ttl_s``.

How: the access call writes a request row (its own short transaction, so no transaction is
held while it waits), wakes the site's long-poll for work, which returns the request in
``AssignmentBatch.presign``; the agent signs (a local computation) and posts the answer, whose
commit notifies the site again. The call waits on the same notifier as the site's long-polls
(hub.jobs.notify; across hub processes through PostgreSQL's NOTIFY) and reads the row when
woken, or every ``RECHECK_S`` should a wake-up be lost, until it is answered or
``drs_presign_wait_s`` has passed (503 with Retry-After: the site's agent is away), then
deletes it. The row lives in the database, not in memory, so any hub process may serve the
call and any the agent's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import delete
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from hub.auth.principal import Principal
from hub.db import after_commit, transaction
from hub.errors import Conflict, CryomeshError, Forbidden, NotFound
from hub.ga4gh.models import PresignRow
from hub.jobs.notify import Notifier
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.presign import PresignAnswer, PresignRequest

#: How often a waiting access call reads its request when nothing woke it (a lost wake-up).
RECHECK_S = 1.0
#: Rows older than this are left from a hub that stopped while waiting; the next request removes them.
STALE = timedelta(minutes=10)


class Unavailable(CryomeshError):
    status_code = 503


def _open(engine: Any, site_id: int, url: str, ttl_s: int) -> str:
    with transaction(engine) as session:
        session.execute(delete(PresignRow).where(col(PresignRow.created_at) < utcnow() - STALE))
        row = PresignRow(id=f"ps-{uuid.uuid4().hex[:16]}", site_id=site_id, url=url, ttl_s=ttl_s)
        session.add(row)
        return row.id


def _read(engine: Any, request_id: str) -> PresignRow | None:
    with transaction(engine, write=False) as session:
        return session.get(PresignRow, request_id)


def _close(engine: Any, request_id: str) -> None:
    with transaction(engine) as session:
        session.execute(delete(PresignRow).where(col(PresignRow.id) == request_id))


async def signed_url(app: FastAPI, site: Site, url: str) -> dict[str, Any]:
    """The DRS AccessURL of ``url`` (s3://…) signed by ``site``'s agent; 403 when the site
    refuses to sign it, 503 when its agent does not answer in time."""
    assert site.id is not None
    settings, engine = app.state.settings, app.state.engine
    notifier: Notifier = app.state.notifier
    deadline = time.monotonic() + settings.drs_presign_wait_s
    # Waiting before the request exists, so the answer's wake-up cannot come before the wait.
    with notifier.waiting(site.id) as woken:
        request_id = await run_in_threadpool(_open, engine, site.id, url, settings.drs_access_ttl_s)
        notifier.notify(site.id)
        try:
            while True:
                woken.clear()
                row = await run_in_threadpool(_read, engine, request_id)
                if row is None or row.state != "pending":
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        f"site {site.name}'s agent did not sign a URL in {settings.drs_presign_wait_s:g} s; try again",
                        headers={"Retry-After": "5"},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=min(remaining, RECHECK_S))
        finally:
            await run_in_threadpool(_close, engine, request_id)
    if row is None or row.state != "signed" or row.signed_url is None:
        raise Forbidden(f"site {site.name} does not give https access to this object: {row.reason if row else 'no answer'}")
    return {"url": row.signed_url}


def pending(session: Session, site_id: int) -> list[PresignRequest]:
    """Requests of ``site_id`` waiting for its agent (returned by its long-poll for work)."""
    rows = session.exec(
        select(PresignRow)
        .where(PresignRow.site_id == site_id, PresignRow.state == "pending")
        .order_by(col(PresignRow.created_at))
    ).all()
    return [PresignRequest(id=r.id, url=r.url, ttl_s=r.ttl_s) for r in rows]


def sites_waiting(session: Session, site_ids: set[int]) -> set[int]:
    """Which of ``site_ids`` have a request waiting (the long-poll's re-check)."""
    query = select(PresignRow.site_id).where(col(PresignRow.site_id).in_(site_ids), PresignRow.state == "pending")
    return set(session.exec(query.distinct()).all())


def answer(session: Session, principal: Principal, request_id: str, body: PresignAnswer, notifier: Notifier) -> None:
    """The agent's answer (``principal`` is an agent). Only the agent of the request's site:
    other agents get 404, as if there were none. Its commit wakes the waiting access call."""
    row = session.get(PresignRow, request_id)
    if row is None or principal.site_id != row.site_id:
        raise NotFound(f"no presign request {request_id!r} for your site (it may have been given up)")
    if row.state != "pending":
        raise Conflict(f"presign request {request_id} was already answered")
    if body.url is not None:
        row.state, row.signed_url, row.expires_at = "signed", body.url, body.expires_at
    else:
        row.state, row.reason = "refused", body.refused
    session.add(row)
    session.flush()
    site_id = row.site_id
    after_commit(session, lambda: notifier.notify(site_id))
