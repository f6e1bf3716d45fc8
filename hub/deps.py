"""Request dependencies as ``Annotated`` aliases: the session, the caller, role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from hub.auth.principal import Principal
from hub.auth.tokens import TokenVerifier
from hub.db import transaction
from hub.errors import Forbidden, Unauthorized
from hub.settings import HubSettings
from shared.schemas.auth import Role
from shared.schemas.common import MAX_INT64

#: Deepest a list may be paged; past it, narrow the list with its filters.
MAX_OFFSET = 1_000_000
#: ``?offset=``: items to skip (bounded so it fits the database).
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
#: A byte count in a query (``?min_bytes=``): no larger than the database holds.
ByteCount = Annotated[int | None, Query(ge=0, le=MAX_INT64)]
#: A numeric row id in a path (``/enrollments/{id}``).
RowId = Annotated[int, Path(ge=1, le=MAX_INT64)]


def get_session(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.engine) as session:
        yield session


# scope="function": the transaction commits before the response is sent, so a 2xx
# always means the change is durable.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_settings_dep(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[HubSettings, Depends(get_settings_dep)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /oauth/token or a trusted issuer")


def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("this endpoint needs a bearer token (Authorization: Bearer <token>)")
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(credentials.credentials, session)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this needs one of the roles: {allowed} (you are {principal.role.value})")
        return principal

    return check


def require_scopes(*scopes: str) -> Callable[[Principal], Principal]:
    def check(principal: CurrentPrincipal) -> Principal:
        missing = [s for s in scopes if s not in principal.scopes]
        if missing:
            raise Forbidden(f"the token lacks the scope(s): {' '.join(missing)}")
        return principal

    return check


NetworkAdmin = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN))]
Person = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN, Role.SITE_ADMIN, Role.RESEARCHER))]
Admin = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN, Role.SITE_ADMIN))]
CurrentAgent = Annotated[Principal, Depends(require_roles(Role.AGENT))]
