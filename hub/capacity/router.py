"""Heartbeat and capacity routes.

Who may call:
- ``POST /api/v1/sites/{site}/heartbeat``: that site's agent only;
- capacity and history of a site: any signed-in person; an agent for its own site.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session

from hub.auth.policy import ensure_agent_of
from hub.auth.principal import Principal
from hub.capacity import service
from hub.deps import CurrentAgent, CurrentPrincipal, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, BadRequest, NotFound, responses
from hub.jobs.service import renew_leases
from hub.metrics import HEARTBEATS
from hub.sites.queries import get_site_by_name
from hub.sites.service import read_site
from hub.timewindow import window
from shared.schemas.capacity import CapacityHistory, Heartbeat, HeartbeatAck, SiteCapacity

router = APIRouter(prefix="/api/v1/sites", tags=["capacity"], route_class=TransactionRoute)


@router.post(
    "/{name}/heartbeat",
    responses=responses(*AUTH_ERRORS, NotFound),
    dependencies=[Depends(require_scopes("agent"))],
)
def heartbeat(
    name: str, hb: Heartbeat, request: Request, session: SessionDep, principal: CurrentAgent, settings: SettingsDep
) -> HeartbeatAck:
    """An agent reports its site's capacity. A malformed snapshot is refused whole (422).

    A plain ``def``, run in the thread pool: everything it does is a blocking database call
    (the session, the token check), so an ``async def`` would only add hops to and from the
    pool (see docs/benchmarks.md, "Heartbeats")."""
    site_id = _own_site_id(session, principal, name)
    ack = service.record_heartbeat(session, site_id, name, hb, settings, request.app.state.history)
    renew_leases(session, site_id, hb.attempts, hb.interval_s * settings.missed_heartbeats)
    HEARTBEATS.inc()
    return ack


def _own_site_id(session: Session, principal: Principal, name: str) -> int:
    """The id of the caller's own site ``name``, from its token where it names that site
    (no read); otherwise the site is looked up to refuse with the right error (403 or 404)."""
    if principal.site_id is not None and principal.site == name:
        return principal.site_id
    site = get_site_by_name(session, name)
    ensure_agent_of(principal, site)
    assert site.id is not None  # ensure_agent_of refused an agent of no site
    return site.id


@router.get("/{name}/capacity", responses=responses(*AUTH_ERRORS, NotFound), dependencies=[Depends(require_scopes("sites:read"))])
def capacity(name: str, session: SessionDep, principal: CurrentPrincipal) -> SiteCapacity:
    """The latest capacity snapshot of a site."""
    return service.latest_capacity(session, read_site(session, principal, name))


@router.get(
    "/{name}/capacity/history",
    responses=responses(*AUTH_ERRORS, NotFound, BadRequest),
    dependencies=[Depends(require_scopes("sites:read"))],
)
def capacity_history(
    name: str,
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    since: datetime | None = None,
    until: datetime | None = None,
    hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24,
) -> CapacityHistory:
    """Downsampled capacity history (one point per ``history_bucket_s``), default the last 24 h."""
    since, until = window(since, until, timedelta(hours=hours))
    site = read_site(session, principal, name)
    return service.history(session, site, since, until, settings.history_bucket_s, request.app.state.history)
