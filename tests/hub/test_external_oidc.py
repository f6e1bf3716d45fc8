"""Tokens from an external OpenID Connect issuer named in the hub's settings.

The issuer here is a second, independent one made by the test: its own RSA key, its
discovery document and JWKS served over real HTTP on loopback, tokens it signs itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.settings import ExternalIssuer
from tests.helpers import Hub, running_hub
from tests.services import free_port, wait_for


class Issuer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "alg": "RS256", "use": "sig"}, private=True)
        self.jwks_hits = 0

        def jwks(_: object) -> JSONResponse:
            self.jwks_hits += 1
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        def discovery(_: object) -> JSONResponse:
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/jwks.json"})

        app = Starlette(routes=[Route("/jwks.json", jwks), Route("/.well-known/openid-configuration", discovery)])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None))

    def token(self, key: RSAKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": "cryomesh-hub", "sub": "u-1234", "iat": now, "exp": now + 300, "org": "osaka-u"}
        body.update(claims)
        key = key or self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid or "idp-1"}, {k: v for k, v in body.items() if v is not None}, key)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    idp = Issuer()
    thread = threading.Thread(target=idp.server.run, daemon=True)
    thread.start()
    wait_for(lambda: idp.server.started, 60, "the test issuer")
    yield idp
    idp.server.should_exit = True
    thread.join(10)


@pytest.fixture
def fed_hub(issuer: Issuer, tmp_path: Path) -> Iterator[Hub]:
    trusted = ExternalIssuer(
        issuer=issuer.url,
        jwks_uri=f"{issuer.url}/jwks.json",
        audience="cryomesh-hub",
        institution_claim="org",
        role_claim="cryomesh_role",
        site_claim="site",
        allowed_roles=["researcher", "site_admin"],
    )
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", external_issuers=[trusted]) as h:
        yield h


def test_researcher_from_external_issuer(fed_hub: Hub, issuer: Issuer) -> None:
    with fed_hub.http(issuer.token()) as c:
        me = c.get("/api/v1/whoami").json()
        assert me == {
            "subject": f"{issuer.url}#u-1234",
            "client_id": None,
            "role": "researcher",
            "site": None,
            "institution": "osaka-u",
            "scopes": ["network:read", "sites:read"],
            "issuer": issuer.url,
        }
        assert c.get("/api/v1/network/summary").status_code == 200
        assert c.post("/api/v1/sites", json={}).status_code == 403
    assert issuer.jwks_hits == 1, "the hub fetched the issuer's keys over HTTP, once"
    with fed_hub.http(issuer.token(sub="u-2")) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    assert issuer.jwks_hits == 1, "and cached them"


def test_external_site_admin_edits_own_site_only(fed_hub: Hub, issuer: Issuer) -> None:
    mine, theirs = fed_hub.create_site("mine"), fed_hub.create_site("theirs")
    with fed_hub.http(issuer.token(cryomesh_role="site_admin", site="mine")) as c:
        assert c.patch(f"/api/v1/sites/{mine['name']}", json={"description": "edited via IdP"}).status_code == 200
        assert c.patch(f"/api/v1/sites/{theirs['name']}", json={"description": "x"}).status_code == 403
    with fed_hub.http(issuer.token(cryomesh_role="site_admin", site="no-such-site")) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 403 and "existing site" in resp.json()["detail"]


def test_issuer_cannot_grant_roles_it_is_not_allowed(fed_hub: Hub, issuer: Issuer) -> None:
    for role in ("network_admin", "agent"):
        with fed_hub.http(issuer.token(cryomesh_role=role)) as c:
            resp = c.get("/api/v1/whoami")
        assert resp.status_code == 403
        assert resp.json()["detail"] == f"issuer {issuer.url} may not grant the role {role!r}"


def test_external_refusals(fed_hub: Hub, issuer: Issuer) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "idp-1"}, private=True)
    now = int(time.time())
    cases = {
        "wrong audience": issuer.token(aud="someone-else"),
        "expired": issuer.token(iat=now - 4000, exp=now - 3600),
        "signed by a key the issuer never published": issuer.token(key=stranger),
    }
    for why, token in cases.items():
        with fed_hub.http(token) as c:
            resp = c.get("/api/v1/whoami")
        assert resp.status_code == 401, why
        assert resp.json()["error"] == "Unauthorized"
    with fed_hub.http(issuer.token(org=None)) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 403 and "institution" in resp.json()["detail"]


def test_hub_without_the_issuer_refuses_its_tokens(sqlite_hub: Hub, issuer: Issuer) -> None:
    with sqlite_hub.http(issuer.token()) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 401 and "not trusted" in resp.json()["detail"]
