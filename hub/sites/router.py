"""Routes of the facility registry.

Who may call:
- create, suspend, activate: network admins;
- edit: network admins, and the site admin of that site (not its status or institution);
- list and show: any signed-in person; an agent sees only its own site.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hub.deps import CurrentPrincipal, NetworkAdmin, Offset, SessionDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, NotFound, responses
from hub.sites import service
from hub.sites.queries import SiteFilter
from shared.schemas.common import Page
from shared.schemas.sites import Reachability, SiteCreate, SitePublic, SiteStatus, SiteUpdate

router = APIRouter(prefix="/api/v1/sites", tags=["sites"], route_class=TransactionRoute)

_read = Depends(require_scopes("sites:read"))
_write = Depends(require_scopes("sites:write"))


@router.post("", status_code=201, responses=responses(*AUTH_ERRORS, Conflict), dependencies=[_write])
def create_site(data: SiteCreate, session: SessionDep, principal: NetworkAdmin) -> SitePublic:
    """Register a partner facility (network admins). It starts ``pending`` until an agent is approved."""
    site = service.create_site(session, data)
    return service.to_public(session, [site])[0]


@router.get("", responses=responses(*AUTH_ERRORS), dependencies=[_read])
def list_sites(
    session: SessionDep,
    principal: CurrentPrincipal,
    status: SiteStatus | None = None,
    reachability: Reachability | None = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
    institution: str | None = None,
    gpu_model: str | None = None,
    software: str | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the name, display name or description")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[SitePublic]:
    """List sites, filtered; agents see only their own site."""
    f = SiteFilter(
        status=status.value if status else None,
        reachability=reachability.value if reachability else None,
        country=country,
        institution=institution,
        gpu_model=gpu_model,
        software=software,
        q=q,
    )
    items, total = service.search_sites(session, principal, f, limit, offset)
    return Page[SitePublic](items=items, total=total, limit=limit, offset=offset)


@router.get("/{name}", responses=responses(*AUTH_ERRORS, NotFound), dependencies=[_read])
def show_site(name: str, session: SessionDep, principal: CurrentPrincipal) -> SitePublic:
    """One site with its partitions, software and storage."""
    return service.to_public(session, [service.read_site(session, principal, name)])[0]


@router.patch("/{name}", responses=responses(*AUTH_ERRORS, NotFound, BadRequest), dependencies=[_write])
def update_site(name: str, data: SiteUpdate, session: SessionDep, principal: CurrentPrincipal) -> SitePublic:
    """Edit a site (network admins; the site's own admin). Lists given replace the old ones."""
    site = service.update_site(session, principal, name, data)
    return service.to_public(session, [site])[0]


@router.post("/{name}/suspend", responses=responses(*AUTH_ERRORS, NotFound), dependencies=[_write])
def suspend_site(name: str, session: SessionDep, principal: NetworkAdmin) -> SitePublic:
    """Suspend a site (network admins): its agents' and admins' tokens stop working at once."""
    return service.to_public(session, [service.set_status(session, name, SiteStatus.SUSPENDED)])[0]


@router.post("/{name}/activate", responses=responses(*AUTH_ERRORS, NotFound), dependencies=[_write])
def activate_site(name: str, session: SessionDep, principal: NetworkAdmin) -> SitePublic:
    """Make a pending or suspended site active (network admins)."""
    return service.to_public(session, [service.set_status(session, name, SiteStatus.ACTIVE)])[0]
