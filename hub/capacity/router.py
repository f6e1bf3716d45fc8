"""Heartbeat and capacity routes.

Who may call:
- ``POST /api/v1/sites/{site}/heartbeat``: that site's agent only;
- capacity and history of a site: any signed-in person; an agent for its own site.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from starlette.datastructures import State

from hub.auth.policy import ensure_agent_of
from hub.auth.principal import Principal
from hub.capacity import service
from hub.capacity.service import Beat
from hub.capacity.writer import HeartbeatWriter
from hub.db import transaction
from hub.deps import CurrentAgent, CurrentPrincipal, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, BadRequest, NotFound, responses
from hub.metrics import HEARTBEATS
from hub.sites.queries import get_site_by_name
from hub.sites.service import read_site
from hub.timewindow import window
from shared.schemas.capacity import CapacityHistory, Heartbeat, HeartbeatAck, SiteCapacity

router = APIRouter(prefix="/api/v1/sites", tags=["capacity"], route_class=TransactionRoute)


#: The heartbeat's scope check (a route dependency, run before ``CurrentAgent``'s role check).
#: ``hub/capacity/fast_path.py`` runs the same two checks in the same order.
agent_scope = require_scopes("agent")


@router.post(
    "/{name}/heartbeat",
    response_model=HeartbeatAck,
    responses=responses(*AUTH_ERRORS, NotFound),
    dependencies=[Depends(agent_scope)],
)
async def heartbeat(name: str, hb: Heartbeat, request: Request, principal: CurrentAgent) -> Response:
    """An agent reports its site's capacity. A malformed snapshot is refused whole (422).

    An ``async def``: the handler runs on the event loop and hands the heartbeat to the
    process's writer, which stores every heartbeat waiting in one transaction (see
    ``hub/capacity/writer.py`` for why: per-request thread hops and commits were most of a
    heartbeat's cost under load). A well-formed heartbeat with a bearer token is answered
    by ``hub/capacity/fast_path.py`` without FastAPI's request handling; every other
    request (and this route's OpenAPI description) comes here."""
    return await store_heartbeat(request.app.state, principal, name, hb)


async def store_heartbeat(state: State, principal: Principal, name: str, hb: Heartbeat) -> Response:
    """Check that ``name`` is the agent's own site (403/404), write ``hb``, answer its ack."""
    site_id = principal.site_id
    if site_id is None or principal.site != name:  # not the site in its token: look it up to refuse right
        site_id = await run_in_threadpool(_own_site_id, state.engine, principal, name)
    writer: HeartbeatWriter = state.heartbeats
    ack = await writer.write(Beat(site_id, name, hb))
    HEARTBEATS.inc()
    # Serialised here, as FastAPI would (by alias), without validating our own ack again.
    return Response(ack.model_dump_json(by_alias=True), media_type="application/json")


def _own_site_id(engine: Engine, principal: Principal, name: str) -> int:
    """The id of site ``name`` if it is the caller's own; otherwise 403 or 404."""
    with transaction(engine, write=False) as session:
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
