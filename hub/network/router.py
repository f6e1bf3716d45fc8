"""``GET /api/v1/network/summary``. Who may call: signed-in people (not agents)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from hub.deps import Offset, Person, SessionDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, responses
from hub.etag import NOT_MODIFIED, etag, not_modified
from hub.network import service
from hub.network.queries import site_counts
from hub.sites.queries import SiteFilter
from shared.schemas.network import NetworkSummary
from shared.schemas.sites import Reachability, SiteStatus

router = APIRouter(prefix="/api/v1/network", tags=["network"], route_class=TransactionRoute)

#: Most sites in one page of the summary.
MAX_SITES_PAGE = 500


def site_page(
    status: SiteStatus | None = None,
    reachability: Reachability | None = None,
    institution: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the site's name, display name or description")] = None,
    limit: Annotated[
        int, Query(ge=0, le=MAX_SITES_PAGE, description="Sites to list; 0 for the totals alone (the summary form)")
    ] = 100,
    offset: Offset = 0,
) -> tuple[SiteFilter, int, int]:
    """Which sites a summary lists: filters, then a page of them by name."""
    f = SiteFilter(status=status and status.value, reachability=reachability and reachability.value, institution=institution, q=q)
    return f, limit, offset


SitePage = Annotated[tuple[SiteFilter, int, int], Depends(site_page)]


def conditional_summary(
    view: str, request: Request, response: Response, session: SessionDep, principal: Person, page: SitePage
) -> NetworkSummary | Response:
    """The summary, or a 304 when the caller's If-None-Match names the current version."""
    counts = site_counts(session)
    f, limit, offset = page
    unchanged = not_modified(request, response, etag(view, principal, [f.__dict__, limit, offset], counts.version))
    return unchanged or service.summary(session, f, limit, offset, counts, request.app.state.network_totals)


@router.get(
    "/summary",
    response_model=NetworkSummary,
    responses={**responses(*AUTH_ERRORS), **NOT_MODIFIED},
    dependencies=[Depends(require_scopes("network:read"))],
)
def network_summary(request: Request, response: Response, session: SessionDep, principal: Person, page: SitePage) -> Any:
    """Sites by status and reachability and network-wide free and total CPUs and GPUs by model
    (summed in the database), with one page of sites (``limit``, ``offset``, filters) and each
    one's latest capacity. ``limit=0``: the totals alone. Sends an ETag; answers 304 to
    If-None-Match while nothing in the network changed."""
    return conditional_summary("network", request, response, session, principal, page)
