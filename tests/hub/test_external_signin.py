"""Browser sign-in through an external OpenID Connect provider.

The provider is made by the test (no real identity provider can run here): a small
Starlette app on loopback that signs people in at once as whoever the test says, issues
codes bound to the PKCE challenge, and returns ID tokens signed with its own RSA key; the
hub checks them against its JWKS over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from hub.settings import ExternalIssuer
from tests.helpers import Hub, running_hub
from tests.hub.test_signin import authorize_params, pkce
from tests.services import free_port, wait_for


class Provider:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "sso-1", "alg": "RS256", "use": "sig"}, private=True)
        self.person: dict[str, Any] = {"sub": "u-77", "name": "Aiko Sato", "org": "osaka-u"}
        self.codes: dict[str, dict[str, Any]] = {}
        self.wrong_nonce = False

        def jwks(_: Request) -> JSONResponse:
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        def authorize(req: Request) -> RedirectResponse:
            q = req.query_params
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"], "redirect_uri": q["redirect_uri"],
                                "client_id": q["client_id"]}  # fmt: skip
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", status_code=302)

        async def token(req: Request) -> JSONResponse:
            form = await req.form()
            grant = self.codes.pop(str(form["code"]), None)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or challenge != grant["challenge"] or form.get("client_secret") != "sso-secret":
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            claims = {"iss": self.url, "aud": grant["client_id"], "iat": now, "exp": now + 300,
                      "nonce": "not-yours" if self.wrong_nonce else grant["nonce"], **self.person}  # fmt: skip
            id_token = jwt.encode({"alg": "RS256", "kid": "sso-1"}, claims, self.key)
            return JSONResponse({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token})

        app = Starlette(routes=[Route("/jwks.json", jwks), Route("/authorize", authorize),
                                Route("/token", token, methods=["POST"])])  # fmt: skip
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None))


@pytest.fixture
def sso(tmp_path: Path) -> Iterator[tuple[Provider, Hub]]:
    p = Provider()
    thread = threading.Thread(target=p.server.run, daemon=True)
    thread.start()
    wait_for(lambda: p.server.started, 60, "the test provider")
    cfg = ExternalIssuer(issuer=p.url, jwks_uri=f"{p.url}/jwks.json", audience="cryomesh-hub", institution_claim="org",
                         role_claim="cryomesh_role", name="Test SSO", authorization_endpoint=f"{p.url}/authorize",
                         token_endpoint=f"{p.url}/token", client_id="hub-at-sso", client_secret="sso-secret")  # type: ignore[arg-type]  # fmt: skip
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", external_issuers=[cfg]) as hub:
        yield p, hub
    p.server.should_exit = True
    thread.join(timeout=10)


def through_provider(hub: Hub, c: httpx.Client, params: dict[str, str]) -> httpx.Response:
    start = c.get(f"{hub.url}/oauth/external/start", params={**params, "idp": "0"})
    assert start.status_code == 303, start.text
    at_provider = c.get(start.headers["location"])
    assert at_provider.status_code == 302
    return c.get(at_provider.headers["location"])


def test_sign_in_through_the_provider_ends_in_the_dashboard(sso: tuple[Provider, Hub]) -> None:
    _, hub = sso
    verifier, challenge = pkce()
    params = authorize_params(hub, challenge)
    with httpx.Client() as c:
        page = c.get(f"{hub.url}/oauth/authorize", params=params)
        assert "Sign in with Test SSO" in page.text
        back = through_provider(hub, c, params)
        assert back.status_code == 303, back.text
        loc = urlparse(back.headers["location"])
        assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{hub.url}/dashboard/"
        q = parse_qs(loc.query)
        assert q["state"] == ["s-123"]
        t = c.post(f"{hub.url}/oauth/token", data={"grant_type": "authorization_code", "code": q["code"][0],
                                                     "code_verifier": verifier, "client_id": "cryomesh-dashboard",
                                                     "redirect_uri": params["redirect_uri"]})  # fmt: skip
        assert t.status_code == 200, t.text
        me = c.get(f"{hub.url}/api/v1/session", headers={"Authorization": f"Bearer {t.json()['access_token']}"}).json()
    assert me["role"] == "researcher" and me["institution"] == "osaka-u" and me["client_id"].startswith("ext-")
    with hub.as_admin() as admin:
        (acct,) = [a for a in admin.get("/api/v1/accounts").json() if a["client_id"] == me["client_id"]]
    assert acct["name"] == "Aiko Sato"


def test_refusals_role_nonce_and_replay(sso: tuple[Provider, Hub]) -> None:
    provider, hub = sso
    _, challenge = pkce()
    params = authorize_params(hub, challenge)
    with httpx.Client() as c:
        provider.person = {"sub": "u-9", "org": "kek", "cryomesh_role": "network_admin"}
        r = through_provider(hub, c, params)
        assert r.status_code == 403 and "may not grant the role" in r.text
        provider.person = {"sub": "u-10", "org": "kek"}
        provider.wrong_nonce = True
        r = through_provider(hub, c, params)
        assert r.status_code == 403 and "nonce" in r.text
        provider.wrong_nonce = False
        start = c.get(f"{hub.url}/oauth/external/start", params={**params, "idp": "0"})
        back = c.get(c.get(start.headers["location"]).headers["location"])
        assert back.status_code == 303
        replay = c.get(str(back.request.url))
        assert replay.status_code == 400 and "unknown or expired" in replay.text
        no_pkce = c.get(
            f"{hub.url}/oauth/external/start", params={k: v for k, v in params.items() if "challenge" not in k} | {"idp": "0"}
        )
        assert no_pkce.status_code == 400
