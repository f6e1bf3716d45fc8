"""Share request routes.

A copy needs two decisions: the owner site's and the receiving site's (see
``hub.datasets.shares``). Who may call:
- request (``POST /api/v1/datasets/{id}/share-requests``): people who can see the dataset;
- list and show: the requester, the owner and receiving sites' admins, network admins
  (others get 404); ``?awaiting=me`` lists the pending requests waiting for the caller's decision;
- approve and deny: the owner site's admin decides for the owner, the receiving site's admin
  for the receiver, a network admin for both (``?side=`` picks one); anyone else: 403; a
  side that has already decided: 409;
- revoke: the requester, the owner or receiving site's admin, network admins;
- share policy: read by people; written by network admins and the site's admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hub.auth.policy import ensure_can_edit_site
from hub.datasets import shares
from hub.deps import CurrentPrincipal, Person, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, Conflict, NotFound, responses
from hub.sites.queries import get_site_by_name
from shared.schemas.datasets import (
    ShareDecision,
    SharePolicy,
    ShareRequestCreate,
    ShareRequestPublic,
    ShareSide,
    ShareState,
)

router = APIRouter(prefix="/api/v1", tags=["shares"], route_class=TransactionRoute)

SideQuery = Annotated[
    ShareSide | None,
    Query(description="Decide only for this side (owner or receiver); by default, every side the caller decides for"),
]


@router.post("/datasets/{dataset_id}/share-requests", status_code=201, responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def request_share(
    dataset_id: str, body: ShareRequestCreate, session: SessionDep, principal: Person, settings: SettingsDep
) -> ShareRequestPublic:
    """Ask for a dataset to be copied to a site. Each site's share policy may consent at once."""
    return shares.to_public(session, shares.request_share(session, principal, dataset_id, body, settings.transfer_max_attempts))


@router.get("/share-requests", responses=responses(*AUTH_ERRORS))
def list_share_requests(
    session: SessionDep,
    principal: Person,
    state: ShareState | None = None,
    awaiting: Annotated[str | None, Query(pattern="^me$", description="'me': requests waiting for the caller's decision")] = None,
) -> list[ShareRequestPublic]:
    """Share requests the caller made, may decide, or receives."""
    rows = shares.list_requests(session, principal, state.value if state else None, awaiting == "me")
    return [shares.to_public(session, r) for r in rows]


@router.get("/share-requests/{request_id}", responses=responses(*AUTH_ERRORS, NotFound))
def show_share_request(request_id: str, session: SessionDep, principal: Person) -> ShareRequestPublic:
    """One request with its audit trail."""
    return shares.to_public(session, shares.get_request(session, principal, request_id))


@router.post("/share-requests/{request_id}/approve", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def approve(
    request_id: str, body: ShareDecision, session: SessionDep, principal: Person, settings: SettingsDep, side: SideQuery = None
) -> ShareRequestPublic:
    """Approve for the caller's side: the owner site's admin for the owner (also the only way to
    share an embargoed dataset early), the receiving site's admin for the receiver, network
    admins for both. The transfer starts once both sides have approved."""
    return shares.to_public(
        session, shares.decide(session, principal, request_id, True, body.reason, settings.transfer_max_attempts, side)
    )


@router.post("/share-requests/{request_id}/deny", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def deny(
    request_id: str, body: ShareDecision, session: SessionDep, principal: Person, settings: SettingsDep, side: SideQuery = None
) -> ShareRequestPublic:
    """Deny for the caller's side (the owner or receiving site's admin; network admins)."""
    return shares.to_public(
        session, shares.decide(session, principal, request_id, False, body.reason, settings.transfer_max_attempts, side)
    )


@router.post("/share-requests/{request_id}/revoke", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def revoke(request_id: str, body: ShareDecision, session: SessionDep, principal: Person) -> ShareRequestPublic:
    """Withdraw a request or an approval (the requester, either site's admin, network admins);
    its transfer is cancelled and a copy made under it is retired."""
    return shares.to_public(session, shares.revoke(session, principal, request_id, body.reason))


@router.get("/sites/{name}/share-policy", responses=responses(*AUTH_ERRORS, NotFound))
def get_share_policy(name: str, session: SessionDep, principal: Person) -> SharePolicy:
    """When the site consents to share requests by itself, as owner and as receiver."""
    site = get_site_by_name(session, name)
    assert site.id is not None
    return shares.share_policy(session, site.id)


@router.put(
    "/sites/{name}/share-policy",
    responses=responses(*AUTH_ERRORS, NotFound),
    dependencies=[Depends(require_scopes("sites:write"))],
)
def put_share_policy(name: str, body: SharePolicy, session: SessionDep, principal: CurrentPrincipal) -> SharePolicy:
    """Set when the site consents to share requests by itself (network admins; the site's admin)."""
    site = get_site_by_name(session, name)
    ensure_can_edit_site(principal, site)
    assert site.id is not None
    return shares.set_share_policy(session, site.id, body)
