"""The token endpoint: Authlib's authorization server, fitted to Starlette and our tables.

Grants: client credentials. Client authentication: ``private_key_jwt`` (RFC 7523, agents)
and ``client_secret_basic`` / ``client_secret_post`` (people and services). Tokens are
RFC 9068 JWTs signed with the hub's current key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from authlib.oauth2 import rfc6749
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, InvalidClientError, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import ECKey, KeySet
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.responses import JSONResponse

from hub.auth.keys import ALG, KeyCache
from hub.auth.models import OAuthClient, UsedAssertion
from hub.auth.principal import ROLE_SCOPES
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.auth import Role

PRIVATE_KEY_JWT = "private_key_jwt"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
#: The longest life a client assertion may claim, which bounds the replay table.
MAX_ASSERTION_LIFETIME_S = 300


def hash_secret(secret: str) -> str:
    """Client secrets are 256-bit random values made by the hub, so one SHA-256 pass is
    enough to make a stolen database useless; a slow password hash adds nothing here."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def check_secret(secret: str, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(hash_secret(secret), stored)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class HubClient(ClientMixin):  # type: ignore[misc]
    """Authlib's view of an ``OAuthClient`` row."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = ROLE_SCOPES[Role(self.row.role)]
        if not scope:
            return " ".join(allowed)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return check_secret(client_secret, self.row.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return False
        if self.row.auth_method == PRIVATE_KEY_JWT:
            return method == PRIVATE_KEY_JWT
        return method in SECRET_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, url: str, headers: Mapping[str, str], form: dict[str, str]) -> None:
        super().__init__(method=method, uri=url, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class PrivateKeyJWTAuth(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, session: Session, audiences: list[str]) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._session = session
        self._audiences = audiences

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: HubClient) -> dict[str, Any]:
        if not client.row.public_jwk:
            raise InvalidClientError(description="this client has no registered public key")
        return client.row.public_jwk

    def verify_claims(self, claims: dict[str, Any]) -> None:
        super().verify_claims(claims)
        iat = claims.get("iat", 0)
        if claims["exp"] - (iat or utcnow().timestamp()) > MAX_ASSERTION_LIFETIME_S:
            raise InvalidClientError(description=f"client assertions may live at most {MAX_ASSERTION_LIFETIME_S} s")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        expires = utcnow() + timedelta(seconds=MAX_ASSERTION_LIFETIME_S + 60)
        try:
            with self._session.begin_nested():
                self._session.add(UsedAssertion(jti=jti[:200], client_id=claims["sub"], expires_at=expires))
        except IntegrityError:
            return False
        return True


class HubClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT, *SECRET_METHODS]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        row: OAuthClient = self.request.client.row
        if row.status == "pending":
            raise InvalidClientError(description="this agent's enrollment is waiting for a network admin's approval")
        if row.status != "active":
            raise InvalidClientError(description="this client has been disabled")
        site = self.server.session.get(Site, row.site_id) if row.site_id is not None else None
        if site is not None and site.status == "suspended":
            raise rfc6749.UnauthorizedClientError(description=f"site {site.name} is suspended")


class HubTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, settings: HubSettings, keys: KeyCache, session: Session) -> None:
        super().__init__(issuer=settings.issuer, alg=ALG, expires_generator=lambda client, grant: settings.token_lifetime_s)
        self._settings = settings
        self._keys = keys
        self._session = session

    def get_jwks(self) -> KeySet:
        # A key set (not a bare key) makes joserfc put the key's ``kid`` in the header.
        return KeySet([ECKey.import_key(self._keys.signing_jwk(self._session))])

    def get_audiences(self, client: HubClient, user: Any, scope: str) -> str:
        return self._settings.token_audience

    def get_extra_claims(self, client: HubClient, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        row = client.row
        claims: dict[str, Any] = {"role": row.role}
        if row.site_id is not None:
            site = self._session.get(Site, row.site_id)
            claims["site"] = site.name if site else None
        if row.institution:
            claims["institution"] = row.institution
        return claims


class HubAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Made per request, holding that request's database session."""

    def __init__(self, session: Session, settings: HubSettings, keys: KeyCache) -> None:
        super().__init__(scopes_supported=sorted({s for scopes in ROLE_SCOPES.values() for s in scopes}))
        self.session = session
        self.register_grant(HubClientCredentialsGrant)
        self.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJWTAuth(session, [settings.token_endpoint, settings.issuer]))
        self.register_token_generator("default", HubTokenGenerator(settings, keys, session))

    def query_client(self, client_id: str) -> HubClient | None:
        row = self.session.get(OAuthClient, client_id)
        return HubClient(row) if row else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        row: OAuthClient = request.client.row
        row.last_token_at = utcnow()
        self.session.add(row)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: StarletteOAuth2Request) -> StarletteOAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> JSONResponse:
        content = json.loads(body) if isinstance(body, str) else body
        return JSONResponse(content, status_code=status, headers=dict(headers))


def prune_used_assertions(session: Session) -> int:
    rows = session.exec(select(UsedAssertion).where(col(UsedAssertion.expires_at) < utcnow())).all()
    for row in rows:
        session.delete(row)
    return len(rows)
