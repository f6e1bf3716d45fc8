"""Job routes.

Who may call:
- submit, estimate: people bound to an institution (researchers, site admins, network admins with one);
- list, show, placement, logs: people, for jobs of their own institution (site admins also
  for jobs placed at their site; network admins for all); other jobs answer 404;
- cancel: the job's owner, a network admin, or the admin of the site running it;
- poll, claim, report, refuse: the agent of the site the attempt belongs to;
- site policy: read by people and the site's agent; written by network admins and the site's admin;
- usage: people (network admins see everything; others their institution and site).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hub.auth.policy import ensure_agent_of, ensure_can_edit_site, ensure_can_read_site
from hub.auth.principal import Principal
from hub.broker.views import load_site_views, policy_of
from hub.costs import service as budgets
from hub.db import transaction
from hub.deps import CurrentAgent, CurrentPrincipal, Offset, Person, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, Forbidden, NotFound, responses
from hub.estimates import service as estimates
from hub.ga4gh import presign
from hub.jobs import service, usage
from hub.jobs.models import SitePolicyRow
from hub.jobs.notify import Notifier
from hub.sites.queries import get_site_by_name
from hub.timewindow import window
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.common import Page
from shared.schemas.jobs import (
    Assignment,
    AssignmentBatch,
    AttemptReport,
    JobEstimate,
    JobLogs,
    JobPlacement,
    JobPublic,
    JobSpec,
    JobState,
    Refusal,
    ReportAck,
    UsageReport,
)
from shared.schemas.sites import SitePolicy

router = APIRouter(prefix="/api/v1", tags=["jobs"], route_class=TransactionRoute)


def _notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.notifier
    return notifier


@router.post(
    "/jobs", status_code=201, responses=responses(*AUTH_ERRORS, Conflict), dependencies=[Depends(require_scopes("sites:read"))]
)
def submit_job(spec: JobSpec, request: Request, session: SessionDep, principal: Person, settings: SettingsDep) -> JSONResponse:
    """Submit a job. 201 with the new job (with ``warnings``, e.g. a budget nearly spent); 200 with
    the first one when the idempotency key was seen; 409 when no site in the network could ever
    run it (with the reason for each site), when its deadline has passed, or when the
    institution's enforced monthly budget is spent."""
    job, created = service.submit(
        session, principal, spec, _notifier(request), request.app.state.site_views, currency=settings.currency
    )
    session.flush()
    public = service.to_public(session, job)
    if created and principal.institution:
        public.warnings = budgets.warnings(session, principal.institution, settings.currency)
    return JSONResponse(public.model_dump(mode="json"), status_code=201 if created else 200)


@router.post(
    "/jobs/estimate", responses=responses(*AUTH_ERRORS, BadRequest), dependencies=[Depends(require_scopes("sites:read"))]
)
def estimate_job(spec: JobSpec, session: SessionDep, principal: Person, settings: SettingsDep) -> JobEstimate:
    """What the job would take at each site: the broker's verdict, the run-time estimate
    (p10/p50/p90, what it learned from) and the cost. Nothing is submitted or stored.
    People bound to an institution (the verdicts are for their institution)."""
    if not principal.institution:
        raise Forbidden("estimating a job needs an account bound to an institution")
    spec = service.resolve_inputs(session, principal, spec)
    now = utcnow()
    return estimates.per_site(load_site_views(session, now), spec, principal.institution, now, settings.currency)


@router.get("/jobs", responses=responses(*AUTH_ERRORS))
def list_jobs(
    session: SessionDep, principal: CurrentPrincipal, state: JobState | None = None, site: str | None = None,
    institution: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0,
) -> Page[JobPublic]:  # fmt: skip
    """Jobs the caller may see, newest first."""
    items, total = service.list_jobs(session, principal, state, site, institution, limit, offset)
    return Page[JobPublic](items=items, total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", responses=responses(*AUTH_ERRORS, NotFound))
def show_job(job_id: str, session: SessionDep, principal: CurrentPrincipal) -> JobPublic:
    """One job."""
    return service.to_public(session, service.get_visible(session, principal, job_id))


@router.get("/jobs/{job_id}/placement", responses=responses(*AUTH_ERRORS, NotFound))
def job_placement(job_id: str, session: SessionDep, principal: CurrentPrincipal) -> JobPlacement:
    """Why the job is still queued (which sites were ruled out, and by what) or why it went where it did."""
    return service.placement(session, principal, job_id)


@router.get("/jobs/{job_id}/logs", responses=responses(*AUTH_ERRORS, NotFound))
def job_logs(job_id: str, session: SessionDep, principal: CurrentPrincipal) -> JobLogs:
    """The tail of the current attempt's stdout and stderr (bounded)."""
    return service.logs(session, principal, job_id)


@router.post("/jobs/{job_id}/cancel", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def cancel_job(job_id: str, request: Request, session: SessionDep, principal: CurrentPrincipal) -> JobPublic:
    """Cancel: a queued job at once; a running one goes CANCELING until its site has stopped it."""
    return service.to_public(session, service.cancel(session, principal, job_id, _notifier(request)))


async def _poll_principal(request: Request, principal: CurrentPrincipal) -> Principal:
    """No session: a long-poll must not hold a transaction open while it waits."""
    if principal.role is not Role.AGENT:
        raise Forbidden("only agents poll for assignments")
    return principal


@router.get("/sites/{name}/assignments", responses=responses(*AUTH_ERRORS, NotFound))
async def poll_assignments(
    name: str, request: Request, principal: Annotated[Principal, Depends(_poll_principal)],
    wait: Annotated[float, Query(ge=0, le=120, description="Seconds to hold the request open when there is nothing")] = 25,
) -> AssignmentBatch:  # fmt: skip
    """Long-poll for work: answers at once when there are offers, cancellations or URLs to sign
    for DRS clients (hub.ga4gh.presign), else when some appear, else after ``wait`` seconds
    with empty lists."""
    app = request.app
    notifier: Notifier = app.state.notifier
    deadline = time.monotonic() + min(wait, app.state.settings.long_poll_max_s)
    if principal.site_id is None:  # every agent is bound to a site; this guards the wait below
        raise Forbidden("this agent is not bound to a site")

    def fetch() -> AssignmentBatch:
        with transaction(app.state.engine, write=False) as session:  # reads only: no write lock per poll
            site = get_site_by_name(session, name)
            ensure_agent_of(principal, site)
            assert site.id is not None
            return AssignmentBatch(
                assignments=service.assignments(session, site, app.state.settings), presign=presign.pending(session, site.id)
            )

    # The database is read when the poll starts and when the notifier says there may be
    # work, not every second: the notifier re-checks once per second for all polls at once.
    with notifier.waiting(principal.site_id) as woken:
        while True:
            woken.clear()
            found = await run_in_threadpool(fetch)
            if found.assignments or found.presign:
                return found
            while not woken.is_set():  # once a second: is the agent still there?
                remaining = deadline - time.monotonic()
                if remaining <= 0 or await request.is_disconnected():
                    return AssignmentBatch(assignments=[])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=min(remaining, 1.0))


@router.post("/attempts/{attempt_id}/claim", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def claim_attempt(attempt_id: str, session: SessionDep, principal: CurrentAgent, settings: SettingsDep) -> Assignment:
    """Claim an offered attempt: a conditional transition, so only one claimer ever wins (others get 409)."""
    return service.claim(session, principal, attempt_id, settings)


@router.post("/attempts/{attempt_id}/reports", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def report_attempt(
    attempt_id: str, body: AttemptReport, session: SessionDep, principal: CurrentAgent, settings: SettingsDep
) -> ReportAck:
    """Report progress. A seq already applied is acknowledged without change; a report for a
    superseded attempt is refused (409) without change."""
    return service.report(session, principal, attempt_id, body, settings)


@router.post("/attempts/{attempt_id}/refuse", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def refuse_attempt(attempt_id: str, body: Refusal, session: SessionDep, principal: CurrentAgent) -> JobPublic:
    """The site declines the assignment; the job goes back to the broker, which avoids this site for it."""
    return service.to_public(session, service.refuse(session, principal, attempt_id, body.reason))


@router.get("/sites/{name}/policy", responses=responses(*AUTH_ERRORS, NotFound))
def get_policy(name: str, session: SessionDep, principal: CurrentPrincipal) -> SitePolicy:
    """What the site lends to the network."""
    site = get_site_by_name(session, name)
    ensure_can_read_site(principal, site)
    return policy_of(session.get(SitePolicyRow, site.id))


@router.put(
    "/sites/{name}/policy", responses=responses(*AUTH_ERRORS, NotFound), dependencies=[Depends(require_scopes("sites:write"))]
)
def put_policy(name: str, body: SitePolicy, request: Request, session: SessionDep, principal: CurrentPrincipal) -> SitePolicy:
    """Set what the site lends (network admins; the site's own admin). Queued jobs are re-placed under it."""
    site = get_site_by_name(session, name)
    ensure_can_edit_site(principal, site)
    row = session.get(SitePolicyRow, site.id) or SitePolicyRow(site_id=site.id)  # type: ignore[arg-type]
    for field, value in body.model_dump(mode="json").items():
        setattr(row, field, value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return policy_of(row)


@router.get("/usage", responses=responses(*AUTH_ERRORS, BadRequest))
def get_usage(
    session: SessionDep, principal: Person, settings: SettingsDep, since: datetime | None = None,
    until: datetime | None = None, days: Annotated[float, Query(gt=0, le=3660)] = 30,
) -> UsageReport:  # fmt: skip
    """CPU- and GPU-hours and cost consumed by institution and provided by site, in a time window (default 30 days)."""
    since, until = window(since, until, timedelta(days=days))
    return usage.report(session, principal, since, until, settings.currency)
