"""Signing people in: the authorization endpoint (code flow with PKCE, for the dashboard),
the device authorization endpoint and its verification page (for ``cryomesh login``),
first-password setup, and signing out.

Who may call:
- ``GET/POST /oauth/authorize``, ``GET/POST /device``: anyone (they ask for a username and password);
- ``POST /oauth/device_authorization``: the CLI's public client;
- ``POST /api/v1/accounts/setup``: anyone holding a valid one-time setup code;
- ``GET /api/v1/session``, ``POST /api/v1/session/end``: a person signed in (their own session).
"""

from __future__ import annotations

import html
from typing import Any

from authlib.oauth2 import OAuth2Error
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import select

from hub.auth.models import DeviceCodeRow, OAuthClient, SignInSession
from hub.auth.people import authenticate, end_session, set_first_password
from hub.auth.server import HubAuthorizationServer, PersonUser, StarletteOAuth2Request, person_scope
from hub.db import transaction
from hub.deps import CurrentPrincipal, SessionDep, TransactionRoute
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, Unauthorized, responses
from hub.types import utcnow
from shared.schemas.common import SafeStr, StrictModel

router = APIRouter(tags=["sign-in"], route_class=TransactionRoute)

OAUTH_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method")
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


#: The refusals a sign-in form answers, as pages a browser shows (documented in the OpenAPI).
HTML_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A page saying what was wrong with the form", "content": {"text/html": {}}},
    401: {"description": "A page saying the username or password is wrong", "content": {"text/html": {}}},
}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · cryomesh</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/dashboard/app.css"></head>
<body class="signin"><main class="card"><h1>cryomesh</h1><h2>{html.escape(title)}</h2>{body}</main></body></html>"""
    return HTMLResponse(doc, status_code=status, headers=PAGE_HEADERS)


def refused(message: str, status: int = 400, title: str = "Cannot sign in") -> HTMLResponse:
    """A sign-in page that says what went wrong (the message is escaped here)."""
    return page(title, f"<p class='error'>{html.escape(message)}</p>", status)


def oauth_refused(exc: OAuth2Error) -> HTMLResponse:
    return refused(exc.description or exc.error)


def _hidden(params: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items() if k in OAUTH_PARAMS
    )


def _signin_form(action: str, params: dict[str, str], error: str | None = None, extra: str = "", button: str = "Sign in") -> str:
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""{err}<form method="post" action="{action}">{_hidden(params)}{extra}
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">{button}</button></form>"""


def _oauth_request(request: Request, params: dict[str, str]) -> StarletteOAuth2Request:
    return StarletteOAuth2Request(request.method, str(request.url), request.headers, params)


@router.get("/oauth/authorize", response_class=HTMLResponse)
async def authorize_page(request: Request) -> Response:
    """The sign-in page of the authorization code flow (PKCE required)."""
    params = dict(request.query_params)
    app = request.app

    def check() -> Response:
        with transaction(app.state.engine) as session:
            server = HubAuthorizationServer(session, app.state.settings, app.state.keys)
            try:
                # The consent check, then the full one (PKCE's hook runs only in the latter).
                server.get_consent_grant(_oauth_request(request, params)).validate_authorization_request()
            except OAuth2Error as exc:
                return oauth_refused(exc)
        from hub.auth.external_signin import provider_links

        return page("Sign in", _signin_form("/oauth/authorize", params) + provider_links(app.state.settings, params))

    return await run_in_threadpool(check)


@router.post("/oauth/authorize", response_class=HTMLResponse)
async def authorize(request: Request) -> Response:
    """Check the username and password; on success redirect back to the dashboard with a one-time code."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    params = {k: v for k, v in form.items() if k in OAUTH_PARAMS}
    app = request.app

    def grant() -> Response:
        with transaction(app.state.engine) as session:
            server = HubAuthorizationServer(session, app.state.settings, app.state.keys)
            oauth_request = _oauth_request(request, params)
            try:
                consent = server.get_consent_grant(oauth_request)
            except OAuth2Error as exc:
                return oauth_refused(exc)
            person = authenticate(session, form.get("username", ""), form.get("password", ""))
            if person is None:
                return page("Sign in", _signin_form("/oauth/authorize", params, "Wrong username or password."), 401)
            response: Response = server.create_authorization_response(oauth_request, PersonUser(person), consent)
            return response

    return await run_in_threadpool(grant)


@router.post("/oauth/device_authorization")
async def device_authorization(request: Request) -> Response:
    """RFC 8628 device authorization: a device code for the CLI to poll with, a user code for the person."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    app = request.app

    def issue() -> Response:
        with transaction(app.state.engine) as session:
            server = HubAuthorizationServer(session, app.state.settings, app.state.keys)
            response: Response = server.create_endpoint_response(
                "device_authorization", StarletteOAuth2Request(request.method, app.state.settings.issuer, request.headers, form)
            )
            if response.status_code != 200:
                session.rollback()
        response.headers["Cache-Control"] = "no-store"
        return response

    return await run_in_threadpool(issue)


def _device_form(user_code: str, error: str | None = None) -> str:
    code = f'<label>Code shown by the CLI <input name="user_code" value="{html.escape(user_code)}" required></label>'
    deny = '<button type="submit" name="decision" value="deny" class="secondary">Deny</button>'
    return _signin_form("/device", {}, error, code, "Approve").replace("</form>", deny + "</form>")


@router.get("/device", response_class=HTMLResponse)
def device_page(user_code: str = "") -> Response:
    """Where a person approves a `cryomesh login` by signing in and confirming its code."""
    return page("Approve a CLI sign-in", _device_form(user_code))


@router.post("/device", response_class=HTMLResponse, responses=HTML_REFUSALS)
async def device_decide(request: Request) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    user_code = form.get("user_code", "").strip().upper()
    app = request.app

    def decide() -> Response:
        with transaction(app.state.engine) as session:
            person = authenticate(session, form.get("username", ""), form.get("password", ""))
            if person is None:
                return page("Approve a CLI sign-in", _device_form(user_code, "Wrong username or password."), 401)
            row = session.exec(select(DeviceCodeRow).where(DeviceCodeRow.user_code == user_code)).first()
            if row is None or row.expires_at <= utcnow() or row.user_id is not None:
                return page("Approve a CLI sign-in", _device_form(user_code, "That code is unknown, used or expired."), 400)
            row.user_id, row.denied, row.scope = person.client_id, form.get("decision") == "deny", person_scope(person)
            session.add(row)
            verb = "denied" if row.denied else "approved"
        return page(f"Sign-in {verb}", f"<p>The CLI sign-in was {verb}. You can close this page.</p>")

    return await run_in_threadpool(decide)


class PasswordSetup(StrictModel):
    username: SafeStr = Field(min_length=1, max_length=100)
    code: SafeStr = Field(min_length=1, max_length=200)
    password: SafeStr = Field(min_length=1, max_length=1000)


@router.post("/api/v1/accounts/setup", status_code=204, responses=responses(BadRequest, Unauthorized))
def setup_password(body: PasswordSetup, session: SessionDep) -> None:
    """Set a person's first password with the one-time code a network admin handed over."""
    set_first_password(session, body.username, body.code, body.password)


class SessionInfo(BaseModel):
    client_id: str | None
    name: str | None = Field(default=None, description="The account's display name (a person's name)")
    username: str | None = Field(default=None, description="The username a person signs in with, if any")
    role: str
    site: str | None
    institution: str | None
    session: str | None
    expires_at: Any = None


@router.get("/api/v1/session", responses=responses(*AUTH_ERRORS))
def current_session(session: SessionDep, principal: CurrentPrincipal) -> SessionInfo:
    """Who is signed in, and until when."""
    s = session.get(SignInSession, principal.session_id) if principal.session_id else None
    account = session.get(OAuthClient, principal.client_id) if principal.client_id else None
    return SessionInfo(
        client_id=principal.client_id,
        name=account.name if account else None,
        username=account.username if account else None,
        role=principal.role.value,
        site=principal.site,
        institution=principal.institution,
        session=principal.session_id,
        expires_at=s.expires_at if s else None,
    )


@router.post("/api/v1/session/end", status_code=204, responses=responses(*AUTH_ERRORS, Conflict))
def sign_out(session: SessionDep, principal: CurrentPrincipal) -> None:
    """Sign out: every token of this sign-in stops working at once."""
    if principal.session_id is None:
        raise Conflict("this token is not a sign-in session (client credentials); nothing to end")
    end_session(session, principal.session_id)
