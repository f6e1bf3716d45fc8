"""Request dependencies as ``Annotated`` aliases: the session, the caller, role checks.

How a request meets the database (docs/architecture.md, "Requests under load"):

1. The caller is checked first, without a transaction: the token's signature, role and
   scopes are pure checks on the event loop (``current_principal``; a token seen before is
   a dictionary look-up, see ``hub/auth/revocation.py``).
2. Then one short transaction, begun by the endpoint's first statement and committed by
   ``TransactionRoute`` in the same handler thread, before the response is sent: a
   transaction never waits for a thread while it holds a connection or a lock.
3. A ``GET`` reads (on SQLite, a deferred ``BEGIN`` that takes no lock); other methods
   write (``BEGIN IMMEDIATE``). So a ``GET`` route must not write: on SQLite its deferred
   transaction would have to upgrade, which fails at once (503) when a writer got there first.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from hub.auth.principal import Principal
from hub.auth.tokens import TokenVerifier
from hub.db import commit, reader, rollback
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

#: Methods whose requests only read.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _commits_in_its_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        session = next((v for v in kwargs.values() if isinstance(v, Session)), None)
        if session is None:
            return endpoint(*args, **kwargs)
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            rollback(session)
            raise
        commit(session)
        return result

    return run


class TransactionRoute(APIRoute):
    """A route whose (synchronous) endpoint commits the request's session in the thread
    that ran it, so the transaction lives within one handler-thread hop. Every router that
    hands out ``SessionDep`` uses it (``APIRouter(route_class=TransactionRoute)``);
    ``get_session`` refuses to serve any other route."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not _is_async(endpoint):
            endpoint = _commits_in_its_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _is_async(endpoint: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(endpoint) or inspect.isasyncgenfunction(endpoint)


def _session(request: Request, write: bool) -> Session:
    if not isinstance(request.scope.get("route"), TransactionRoute):
        raise RuntimeError(f"{request.url.path}: a route that takes a session must be a TransactionRoute")
    engine = request.app.state.engine
    # Lazy: no connection is taken until the endpoint's first statement.
    return Session(engine if write else reader(engine), expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    session = _session(request, write=request.method not in READ_METHODS)
    try:
        yield session
    finally:
        # Committed or rolled back in the endpoint's thread already; this only returns a
        # connection that serialising the response may have taken for a lazy load.
        session.close()


# scope="function": the transaction ends before the response is sent, so a 2xx always
# means the change is durable.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_settings_dep(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[HubSettings, Depends(get_settings_dep)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /oauth/token or a trusted issuer")


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("this endpoint needs a bearer token (Authorization: Bearer <token>)")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.authenticate(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this needs one of the roles: {allowed} (you are {principal.role.value})")
        return principal

    return check


def require_scopes(*scopes: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        missing = [s for s in scopes if s not in principal.scopes]
        if missing:
            raise Forbidden(f"the token lacks the scope(s): {' '.join(missing)}")
        return principal

    return check


NetworkAdmin = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN))]
Person = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN, Role.SITE_ADMIN, Role.RESEARCHER))]
Admin = Annotated[Principal, Depends(require_roles(Role.NETWORK_ADMIN, Role.SITE_ADMIN))]
#: The check behind ``CurrentAgent`` (the heartbeat's fast path calls it directly).
require_agent = require_roles(Role.AGENT)
CurrentAgent = Annotated[Principal, Depends(require_agent)]
