"""``POST /api/v1/sites/{name}/heartbeat`` served without FastAPI's request handling.

Why: a heartbeat is the hub's most frequent request, and with the write batched
(``hub/capacity/writer.py``) most of its CPU went to FastAPI around the handler: resolving
the route's dependencies (a ``Request``, a ``Response``, a cache key per dependency),
matching the path against every included router, and parsing the body to a dict before
validating it (docs/benchmarks.md, "Heartbeat fast path").

What: a route placed first in the application's router. It takes only what FastAPI would
accept, and answers it as FastAPI would:

1. it reads the body, and hands the request on unless it is one JSON document
   (``Content-Type: application/json``) that validates as a ``Heartbeat``
   (``model_validate_json`` on the bytes: one pass) and the request carries a bearer token;
2. then it runs the route's checks in FastAPI's order (the token, then the ``agent`` scope,
   then the agent role, then the site), calling the same functions, which raise the same
   errors, rendered by the same exception handlers;
3. and stores the heartbeat with the route's own ``store_heartbeat``.

Every request it hands on (no token, not JSON, a body that does not validate, a body cut
short) goes to the FastAPI route with its body replayed, so each of those refusals is
FastAPI's own: a malformed body is 422 before any token check, as there, and an agent
without a token is 401. The FastAPI route stays registered: it serves those requests and
describes the route in the OpenAPI document.

Who may call: the site's agent only (the route's checks, above).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers, URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Message, Receive, Scope, Send

from hub.auth.tokens import TokenVerifier
from hub.capacity.router import agent_scope, heartbeat, store_heartbeat
from hub.deps import require_agent
from shared.schemas.capacity import Heartbeat

#: Set in a request's scope when it is handed on, so this route does not take it again.
HANDED_ON = "cryomesh.heartbeat_handed_on"
#: Content types taken here; any other goes to FastAPI, which decides (422, or a JSON variant).
JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})

#: What a read of the body saw: each message in order (an exception if ``receive`` raised).
Seen = list[Message | Exception]


class HeartbeatFastPath(BaseRoute):
    """Serves the heartbeats FastAPI would accept; hands every other request to ``app``'s router."""

    def __init__(self, app: FastAPI, route: APIRoute) -> None:
        self.app = app
        self.route = route  # the FastAPI route: its path, its matching, its name in metrics
        self.path = route.path
        self.path_format = route.path_format

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or HANDED_ON in scope:
            return Match.NONE, {}
        match, child_scope = self.route.matches(scope)  # sets child_scope["route"] to the FastAPI route
        return (Match.FULL, child_scope) if match is Match.FULL else (Match.NONE, {})

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the FastAPI route has the heartbeat's name

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen, body = await _read_body(receive)
        headers = Headers(scope=scope)
        token = _bearer_token(headers.get("authorization"))
        hb = _heartbeat(body) if body is not None and token and headers.get("content-type") in JSON_TYPES else None
        if hb is None or token is None:
            scope[HANDED_ON] = True
            await self.app.router(scope, _replay(seen, receive), send)
            return
        state = scope["app"].state
        verifier: TokenVerifier = state.verifier
        principal = await verifier.authenticate(token)
        await agent_scope(principal)
        await require_agent(principal)
        response = await store_heartbeat(state, principal, scope["path_params"]["name"], hb)
        await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Put the fast path first in ``app``'s routes, in front of the FastAPI heartbeat route."""
    routes = [r for r in _api_routes(app.router.routes) if r.endpoint is heartbeat]
    if len(routes) != 1:
        raise RuntimeError(f"the heartbeat route is registered {len(routes)} times; it must be once")
    app.router.routes.insert(0, HeartbeatFastPath(app, routes[0]))


def _api_routes(routes: list[BaseRoute]) -> list[APIRoute]:
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:  # an included router
            found += _api_routes(included.routes)
    return found


async def _read_body(receive: Receive) -> tuple[Seen, bytes | None]:
    """The messages read and the whole body; no body if the request ended otherwise (a
    disconnect, or one over the size limit, which ``BodyLimit`` turns into a disconnect)."""
    seen: Seen = []
    chunks = []
    while True:
        try:
            message = await receive()
        except Exception as exc:  # handed on: FastAPI's reading meets the same error
            seen.append(exc)
            return seen, None
        seen.append(message)
        if message["type"] != "http.request":
            return seen, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return seen, b"".join(chunks)


def _replay(seen: Seen, receive: Receive) -> Receive:
    """``receive`` as if nothing had been read yet."""
    pending = deque(seen)

    async def again() -> Message:
        if not pending:
            return await receive()
        message = pending.popleft()
        if isinstance(message, Exception):
            raise message
        return message

    return again


def _bearer_token(authorization: str | None) -> str | None:
    """The token, as FastAPI's ``HTTPBearer`` reads it; None where it would find none."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _heartbeat(body: bytes) -> Heartbeat | None:
    try:
        return Heartbeat.model_validate_json(body)
    except ValidationError:
        return None
