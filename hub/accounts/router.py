"""Routes for accounts. Who may call: network admins only."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hub.accounts import service
from hub.deps import NetworkAdmin, SessionDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, Conflict, NotFound, responses
from shared.schemas.auth import AccountCreate, AccountCredentials, ClientPublic

router = APIRouter(
    prefix="/api/v1/accounts", tags=["accounts"], dependencies=[Depends(require_scopes("admin"))], route_class=TransactionRoute
)


@router.post("", status_code=201, responses=responses(*AUTH_ERRORS, NotFound))
def create_account(data: AccountCreate, session: SessionDep, principal: NetworkAdmin) -> AccountCredentials:
    """Create a person's or a service's account; the secret is shown in this reply only."""
    return service.create_account(session, data, created_by=principal.label())


@router.get("", responses=responses(*AUTH_ERRORS))
def list_accounts(session: SessionDep, principal: NetworkAdmin) -> list[ClientPublic]:
    """All accounts of people and services."""
    return service.list_accounts(session)


@router.post("/{client_id}/disable", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def disable_account(client_id: str, session: SessionDep, principal: NetworkAdmin) -> ClientPublic:
    """Disable an account: its tokens stop working at once."""
    return service.client_public(session, service.disable_account(session, principal, client_id))
