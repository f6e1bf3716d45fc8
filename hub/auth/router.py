"""OAuth 2.0 endpoints.

Who may call:
- ``/.well-known/oauth-authorization-server`` and ``/.well-known/jwks.json``: anyone;
- ``POST /oauth/token``: OAuth clients, authenticating as the RFC says (errors follow RFC 6749 §5.2);
- ``GET /api/v1/whoami``: any valid token;
- ``POST /api/v1/admin/signing-keys/rotate``: network admins.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from hub.auth import keys as signing_keys
from hub.auth.keys import KeyCache
from hub.auth.principal import ROLE_SCOPES
from hub.auth.server import HubAuthorizationServer, StarletteOAuth2Request
from hub.db import after_commit, transaction
from hub.deps import CurrentPrincipal, NetworkAdmin, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, responses
from shared.schemas.auth import WhoAmI

router = APIRouter(tags=["oauth"], route_class=TransactionRoute)


@router.get("/.well-known/oauth-authorization-server")
def metadata(settings: SettingsDep) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    return {
        "issuer": settings.issuer,
        "token_endpoint": settings.token_endpoint,
        "jwks_uri": f"{settings.issuer}/.well-known/jwks.json",
        "authorization_endpoint": f"{settings.issuer}/oauth/authorize",
        "device_authorization_endpoint": f"{settings.issuer}/oauth/device_authorization",
        "grant_types_supported": ["client_credentials", "authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256"],
        "scopes_supported": sorted({s for scopes in ROLE_SCOPES.values() for s in scopes}),
        "response_types_supported": ["code"],
        "service_documentation": f"{settings.issuer}/docs",
    }


@router.get("/.well-known/jwks.json")
def jwks(request: Request) -> JSONResponse:
    """The public keys that verify the hub's access tokens, retired keys included until their tokens expire."""
    cache: KeyCache = request.app.state.keys
    return JSONResponse(cache.jwks(), headers={"Cache-Control": "public, max-age=60"})


@router.post("/oauth/token", response_class=Response)
async def token(request: Request) -> Response:
    """The token endpoint (client credentials grant)."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    app = request.app
    # The configured public URL, not the socket's: behind a TLS-terminating proxy the
    # request arrives as http, and settings already insist on https outside loopback.
    oauth_request = StarletteOAuth2Request(request.method, app.state.settings.token_endpoint, request.headers, form)

    def issue() -> Response:
        app.state.keys.signing_jwk()  # a stale key cache reloads now, before the write lock is taken
        with transaction(app.state.engine) as session:
            server = HubAuthorizationServer(session, app.state.settings, app.state.keys)
            response: Response = server.create_token_response(oauth_request)
            # A refusal writes nothing, except a device poll's time (to tell a too-eager CLI to slow down).
            if response.status_code != 200 and b'"authorization_pending"' not in bytes(response.body):
                session.rollback()
        response.headers["Cache-Control"] = "no-store"
        return response

    return await run_in_threadpool(issue)


@router.get("/api/v1/whoami", responses=responses(*AUTH_ERRORS))
async def whoami(principal: CurrentPrincipal) -> WhoAmI:
    """The identity and bounds the hub reads from the caller's token. Any valid token.

    On the event loop: it reads nothing, so a handler thread would only add two hops."""
    return WhoAmI(
        subject=principal.subject,
        client_id=principal.client_id,
        role=principal.role,
        site=principal.site,
        institution=principal.institution,
        scopes=sorted(principal.scopes),
        issuer=principal.issuer,
    )


@router.post(
    "/api/v1/admin/signing-keys/rotate",
    responses=responses(*AUTH_ERRORS),
    dependencies=[Depends(require_scopes("admin"))],
)
def rotate_signing_key(request: Request, session: SessionDep, principal: NetworkAdmin) -> dict[str, str]:
    """Start signing with a new key now. Tokens signed by the old key stay valid until they expire."""
    key = signing_keys.rotate(session)
    after_commit(session, request.app.state.keys.invalidate)
    return {"kid": key.kid}
