"""Browser sign-in through an external OpenID Connect provider.

The dashboard's sign-in page offers each provider configured with ``authorization_endpoint``,
``token_endpoint`` and ``client_id``. The hub, a confidential client of the provider,
sends the person there (code flow with PKCE and a nonce), checks the ID token it gets back
(signature from the provider's JWKS, issuer, audience = the hub's client id, nonce), maps
its claims to a role, institution and site exactly as for the provider's API tokens, keeps
an account for the person (``ext-...``, updated at each sign-in; a network admin can
disable it), and then finishes the dashboard's own sign-in with a code of its own.

Who may call: anyone (the provider authenticates the person).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2 import OAuth2Error
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlmodel import Session

from hub.auth.models import ExternalSignIn, OAuthClient
from hub.auth.server import HubAuthorizationServer, PersonUser, StarletteOAuth2Request
from hub.auth.signin import OAUTH_PARAMS, oauth_refused, refused
from hub.auth.tokens import TokenVerifier, map_claims
from hub.db import transaction
from hub.deps import TransactionRoute
from hub.errors import CryomeshError
from hub.settings import ExternalIssuer, HubSettings
from hub.types import utcnow

router = APIRouter(tags=["sign-in"], route_class=TransactionRoute)
SIGNIN_TTL_S = 600


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def providers(settings: HubSettings) -> list[ExternalIssuer]:
    return [i for i in settings.external_issuers if i.browser_sign_in]


def provider_links(settings: HubSettings, params: dict[str, str]) -> str:
    links = [
        f'<p><a class="button" href="/oauth/external/start?{html.escape(urlencode({**params, "idp": str(n)}))}">'
        f"Sign in with {html.escape(p.name or p.issuer)}</a></p>"
        for n, p in enumerate(providers(settings))
    ]
    return "".join(links)


def _server(session: Session, request: Request) -> HubAuthorizationServer:
    app = request.app
    return HubAuthorizationServer(session, app.state.settings, app.state.keys)


@router.get("/oauth/external/start")
async def start(request: Request, idp: int) -> Response:
    """Send the person to the external provider, remembering the dashboard's request."""
    params = {k: v for k, v in request.query_params.items() if k in OAUTH_PARAMS}
    app = request.app
    configured = providers(app.state.settings)
    if not 0 <= idp < len(configured):
        return refused("No such sign-in provider.", 404)
    cfg = configured[idp]

    def begin() -> Response:
        with transaction(app.state.engine) as session:
            try:
                server = _server(session, request)
                oauth = StarletteOAuth2Request("GET", str(request.url), request.headers, params)
                server.get_consent_grant(oauth).validate_authorization_request()
            except OAuth2Error as exc:
                return oauth_refused(exc)
            state, verifier, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(16)
            session.add(ExternalSignIn(state_hash=_hash(state), issuer=cfg.issuer, code_verifier=verifier, nonce=nonce,
                                       params=params, expires_at=utcnow() + timedelta(seconds=SIGNIN_TTL_S)))  # fmt: skip
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({
            "response_type": "code", "client_id": cfg.client_id, "redirect_uri": callback_uri(app.state.settings),
            "scope": "openid profile email", "state": state, "nonce": nonce, "code_challenge": challenge,
            "code_challenge_method": "S256",
        })  # fmt: skip
        return Response(status_code=303, headers={"Location": f"{cfg.authorization_endpoint}?{query}"})

    return await run_in_threadpool(begin)


def callback_uri(settings: HubSettings) -> str:
    return f"{settings.issuer}/oauth/external/callback"


def _account(session: Session, cfg: ExternalIssuer, claims: dict[str, Any]) -> OAuthClient:
    role, institution, site = map_claims(cfg, claims, session)
    client_id = "ext-" + _hash(f"{cfg.issuer}#{claims['sub']}")[:16]
    row = session.get(OAuthClient, client_id)
    if row is None:
        row = OAuthClient(client_id=client_id, name="", kind="person", role=role.value, auth_method="external",
                          created_by=cfg.issuer)  # fmt: skip
    elif row.status != "active":
        raise PermissionError("this account has been disabled by a network admin")
    row.name = str(claims.get("name") or claims.get("email") or claims["sub"])[:200]
    row.role, row.institution, row.site_id, row.updated_at = role.value, institution, site.id if site else None, utcnow()
    session.add(row)
    session.flush()
    return row


@router.get("/oauth/external/callback")
async def callback(request: Request) -> Response:
    """The provider sends the person back here; check the ID token and finish the dashboard's sign-in."""
    q = dict(request.query_params)
    app = request.app
    verifier_: TokenVerifier = app.state.verifier

    def finish() -> Response:
        with transaction(app.state.engine) as session:
            pending = session.get(ExternalSignIn, _hash(q.get("state", "")))
            if pending is None or pending.expires_at <= utcnow():
                return refused("This sign-in is unknown or expired; start again.")
            session.delete(pending)  # one-time
            if "error" in q:
                why = q.get("error_description") or q["error"]
                return refused(f"The provider said: {why}", 403, "Sign-in refused")
            found = verifier_.external(pending.issuer)
            if found is None:
                return refused("That provider is no longer configured.")
            cfg, jwks = found
            form = {
                "grant_type": "authorization_code",
                "code": q.get("code", ""),
                "redirect_uri": callback_uri(app.state.settings),
                "code_verifier": pending.code_verifier,
                "client_id": cfg.client_id or "",
            }
            if cfg.client_secret is not None:
                form["client_secret"] = cfg.client_secret.get_secret_value()
            try:
                r = httpx.post(str(cfg.token_endpoint), data=form, timeout=15)
            except httpx.HTTPError as exc:
                return refused(f"The provider did not answer: {exc}", 502)
            if r.status_code != 200 or "id_token" not in r.text:
                return refused(f"The provider refused the code ({r.status_code}).", 403)
            try:
                claims = verifier_.verify_id_token(str(r.json()["id_token"]), cfg, jwks)
                if claims.get("nonce") != pending.nonce:
                    raise PermissionError("the ID token's nonce does not match this sign-in")
                person = _account(session, cfg, claims)
            except (CryomeshError, PermissionError) as exc:
                session.commit()  # the one-time state is spent either way
                why = getattr(exc, "detail", None) or str(exc)
                return refused(why, 403, "Sign-in refused")
            server = _server(session, request)
            oauth = StarletteOAuth2Request("GET", str(request.url), request.headers, dict(pending.params))
            try:
                grant = server.get_consent_grant(oauth)
            except OAuth2Error as exc:
                return oauth_refused(exc)
            response: Response = server.create_authorization_response(oauth, PersonUser(person), grant)
            return response

    return await run_in_threadpool(finish)
