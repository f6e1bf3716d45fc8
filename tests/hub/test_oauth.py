"""The hub as OAuth 2.0 authorization server, and every way a bearer token is refused."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OctKey
from sqlmodel import Session, col, select

from hub.auth.models import SigningKey
from hub.db import make_engine
from tests.helpers import Hub


def hub_signing_key(hub: Hub) -> ECKey:
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with Session(engine) as s:
            row = s.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None))).one()
            return ECKey.import_key(row.private_jwk)
    finally:
        engine.dispose()


def claims_for(hub: Hub, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": hub.settings.issuer,
        "aud": hub.settings.token_audience,
        "sub": hub.admin.client_id,
        "client_id": hub.admin.client_id,
        "scope": "sites:read sites:write network:read admin",
        "iat": now,
        "exp": now + 300,
        "jti": "forged",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def forge(key: ECKey, claims: dict[str, Any], kid: str | None = None, typ: str = "at+jwt") -> str:
    header = {"alg": "ES256", "typ": typ, "kid": kid or key.kid}
    return jwt.encode(header, claims, key)


def refused(hub: Hub, token: str, status: int = 401) -> dict[str, Any]:
    with hub.http(token) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == {401: "Unauthorized", 403: "Forbidden"}[status]
    if status == 401:
        assert resp.headers["www-authenticate"].startswith("Bearer")
    return dict(body)


def test_metadata_and_jwks_are_public(sqlite_hub: Hub) -> None:
    meta = httpx.get(f"{sqlite_hub.url}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == sqlite_hub.url
    assert meta["token_endpoint"] == f"{sqlite_hub.url}/oauth/token"
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert meta["grant_types_supported"] == [
        "client_credentials",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_endpoint"].endswith("/oauth/authorize")
    keys = httpx.get(meta["jwks_uri"]).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC" and "d" not in keys[0], "the JWKS must hold public keys only"


def test_access_token_follows_rfc9068(sqlite_hub: Hub) -> None:
    resp = httpx.post(
        f"{sqlite_hub.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(sqlite_hub.admin.client_id, sqlite_hub.admin.client_secret),
    )
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == sqlite_hub.settings.token_lifetime_s
    token = body["access_token"]
    header = jws.extract_compact(token.encode()).headers()
    kids = {k["kid"] for k in httpx.get(f"{sqlite_hub.url}/.well-known/jwks.json").json()["keys"]}
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"] in kids
    claims = json.loads(jws.extract_compact(token.encode()).payload)
    for claim in ("iss", "aud", "exp", "sub", "scope", "iat", "jti", "client_id"):
        assert claim in claims, claim
    assert claims["iss"] == sqlite_hub.url and claims["aud"] == sqlite_hub.settings.token_audience
    assert claims["exp"] - claims["iat"] == sqlite_hub.settings.token_lifetime_s
    assert claims["role"] == "network_admin"


def test_scope_can_be_narrowed_but_not_widened(sqlite_hub: Hub) -> None:
    researcher = sqlite_hub.account("researcher", institution="kek")
    narrow = sqlite_hub.token_for(researcher, scope="network:read admin")
    with sqlite_hub.http(narrow) as c:
        me = c.get("/api/v1/whoami").json()
        assert me["scopes"] == ["network:read"], "a researcher can never get the admin scope"
        resp = c.get("/api/v1/sites")
    assert resp.status_code == 403 and "sites:read" in resp.json()["detail"]


def test_wrong_secret_is_refused(sqlite_hub: Hub) -> None:
    resp = httpx.post(
        f"{sqlite_hub.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(sqlite_hub.admin.client_id, "wrong")
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_unsupported_grant_is_refused(sqlite_hub: Hub) -> None:
    resp = httpx.post(
        f"{sqlite_hub.url}/oauth/token",
        data={"grant_type": "password", "username": "x", "password": "y"},
        auth=(sqlite_hub.admin.client_id, sqlite_hub.admin.client_secret),
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


def test_no_token_is_401(sqlite_hub: Hub) -> None:
    for path in ("/api/v1/whoami", "/api/v1/sites", "/api/v1/network/summary", "/api/v1/accounts"):
        resp = httpx.get(f"{sqlite_hub.url}{path}")
        assert resp.status_code == 401, path
        assert resp.json() == {
            "error": "Unauthorized",
            "detail": "this endpoint needs a bearer token (Authorization: Bearer <token>)",
        }


def test_health_is_open(sqlite_hub: Hub) -> None:
    assert httpx.get(f"{sqlite_hub.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{sqlite_hub.url}/readyz").json() == {"status": "ready"}


def test_a_correctly_forged_token_is_accepted(sqlite_hub: Hub) -> None:
    """Control for the refusals below: the forger itself makes tokens the hub accepts."""
    token = forge(hub_signing_key(sqlite_hub), claims_for(sqlite_hub))
    with sqlite_hub.http(token) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_expired_token_is_401(sqlite_hub: Hub) -> None:
    now = int(time.time())
    token = forge(hub_signing_key(sqlite_hub), claims_for(sqlite_hub, iat=now - 4000, exp=now - 3600))
    assert "expired" in refused(sqlite_hub, token)["detail"]


def test_token_signed_by_unknown_key_is_401(sqlite_hub: Hub) -> None:
    stranger = ECKey.generate_key("P-256", private=True)
    body = refused(sqlite_hub, forge(stranger, claims_for(sqlite_hub), kid="not-a-hub-key"))
    assert "signature" in body["detail"]
    # Same kid as the hub's key, other key material: still refused.
    real_kid = hub_signing_key(sqlite_hub).kid
    refused(sqlite_hub, forge(stranger, claims_for(sqlite_hub), kid=real_kid))


def test_alg_none_is_401(sqlite_hub: Hub) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    for alg in ("none", "None", "NONE"):
        token = f"{b64({'alg': alg, 'typ': 'at+jwt'})}.{b64(claims_for(sqlite_hub))}."
        assert "none" in refused(sqlite_hub, token)["detail"]


def test_hmac_signed_with_the_public_key_is_401(sqlite_hub: Hub) -> None:
    """Algorithm confusion: HS256 keyed with the published public key."""
    public = json.dumps(httpx.get(f"{sqlite_hub.url}/.well-known/jwks.json").json()["keys"][0])
    key = OctKey.import_key(public.encode())
    token = jwt.encode({"alg": "HS256", "typ": "at+jwt"}, claims_for(sqlite_hub), key)
    refused(sqlite_hub, token)


def test_wrong_audience_is_401(sqlite_hub: Hub) -> None:
    token = forge(hub_signing_key(sqlite_hub), claims_for(sqlite_hub, aud="https://some-other-service.example"))
    assert "aud" in refused(sqlite_hub, token)["detail"]


def test_untrusted_issuer_is_401(sqlite_hub: Hub) -> None:
    token = forge(hub_signing_key(sqlite_hub), claims_for(sqlite_hub, iss="https://evil.example"))
    assert "not trusted" in refused(sqlite_hub, token)["detail"]


def test_tampered_token_is_401(sqlite_hub: Hub) -> None:
    token = sqlite_hub.token_for(sqlite_hub.account("researcher", institution="kek"))
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "network_admin"
    claims["client_id"] = claims["sub"] = sqlite_hub.admin.client_id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(sqlite_hub, f"{head}.{forged_payload}.{sig}")


def test_id_token_style_typ_is_401(sqlite_hub: Hub) -> None:
    token = forge(hub_signing_key(sqlite_hub), claims_for(sqlite_hub), typ="JWT")
    assert "at+jwt" in refused(sqlite_hub, token)["detail"]


def test_garbage_token_is_401(sqlite_hub: Hub) -> None:
    for token in ("x", "a.b.c", "ey.ey.ey", "." * 3):
        refused(sqlite_hub, token)


def test_disabled_account_is_refused_at_once(sqlite_hub: Hub) -> None:
    researcher = sqlite_hub.account("researcher", institution="kek")
    token = sqlite_hub.token_for(researcher)
    with sqlite_hub.http(token) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    with sqlite_hub.as_admin() as c:
        assert c.post(f"/api/v1/accounts/{researcher.client_id}/disable").status_code == 200
    assert "disabled" in refused(sqlite_hub, token)["detail"]
    resp = httpx.post(
        f"{sqlite_hub.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(researcher.client_id, researcher.client_secret),
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_client"
    assert "disabled" in resp.json()["error_description"]


def test_signing_key_rotation_keeps_old_tokens_valid(sqlite_hub: Hub, tmp_path: Path) -> None:
    old_token = sqlite_hub.token_for(sqlite_hub.admin)
    old_kid = jws.extract_compact(old_token.encode()).headers()["kid"]
    with sqlite_hub.as_admin() as c:
        resp = c.post("/api/v1/admin/signing-keys/rotate")
    assert resp.status_code == 200
    new_kid = resp.json()["kid"]
    assert new_kid != old_kid
    kids = [k["kid"] for k in httpx.get(f"{sqlite_hub.url}/.well-known/jwks.json").json()["keys"]]
    assert set(kids) == {old_kid, new_kid}, "the retired key stays published until its tokens expire"
    with sqlite_hub.http(old_token) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    sqlite_hub._tokens.clear()
    new_token = sqlite_hub.token_for(sqlite_hub.admin)
    assert jws.extract_compact(new_token.encode()).headers()["kid"] == new_kid
    with sqlite_hub.http(new_token) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_only_network_admins_rotate_signing_keys(sqlite_hub: Hub) -> None:
    site = sqlite_hub.create_site()
    for who in (sqlite_hub.account("researcher", institution="x"), sqlite_hub.account("site_admin", site=site["name"])):
        with sqlite_hub.as_(who) as c:
            resp = c.post("/api/v1/admin/signing-keys/rotate")
        assert resp.status_code == 403, who.role


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_openapi_documents_refusals(sqlite_hub: Hub, path: str) -> None:
    resp = httpx.get(
        f"{sqlite_hub.url}{path}", timeout=60
    )  # the first /openapi.json builds the document: seconds on a busy machine
    assert resp.status_code == 200
    if path == "/openapi.json":
        op = resp.json()["paths"]["/api/v1/sites"]["post"]
        assert {"401", "403", "409", "422"} <= set(op["responses"])
