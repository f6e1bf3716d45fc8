"""The hub's authorization server: Authlib's, fitted to Starlette and our tables.

Grants: client credentials (agents with ``private_key_jwt``, RFC 7523; services and
people's CLI keys with a client secret); authorization code with PKCE (RFC 7636) for the
dashboard, a public client; the device authorization grant (RFC 8628) for ``cryomesh
login``, a public client. Tokens are RFC 9068 JWTs signed with the hub's current key; a
person's token carries its sign-in session (``sid``) and lasts as long as the session.
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
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidRequestError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE, DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import ECKey, KeySet
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.responses import JSONResponse, Response

from hub.auth.keys import ALG, KeyCache
from hub.auth.models import AuthorizationCodeRow, DeviceCodeRow, OAuthClient, UsedAssertion
from hub.auth.people import CLI_CLIENT, DASHBOARD_CLIENT, start_session
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


class PublicClient(ClientMixin):  # type: ignore[misc]
    """A client built into the hub, with no secret: the dashboard (authorization code + PKCE,
    redirecting only to the hub's own dashboard) or the CLI (device grant)."""

    def __init__(self, client_id: str, grant_type: str, redirect_uris: tuple[str, ...] = ()) -> None:
        self.client_id, self.grant_type, self.redirect_uris = client_id, grant_type, redirect_uris

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.grant_type == "authorization_code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == self.grant_type


class PersonUser:
    """The resource owner of a person's grant: their account row."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_user_id(self) -> str:
        return self.row.client_id


def person_scope(row: OAuthClient) -> str:
    return " ".join(ROLE_SCOPES[Role(row.role)])


class AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    def __init__(self, row: AuthorizationCodeRow) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> None:
        return None


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE is required, and only with S256 (RFC 7636's 'plain' protects nothing against a leaked request)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        super().validate_code_challenge(grant, redirect_uri)


class HubAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    #: Codes are one-time and short-lived (RFC 6749 recommends at most 10 minutes).
    CODE_TTL_S = 120

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        user: PersonUser = request.user
        self.server.session.add(
            AuthorizationCodeRow(
                code_hash=_hash(code),
                client_id=request.client.get_client_id(),
                user_id=user.row.client_id,
                redirect_uri=request.payload.redirect_uri or "",
                scope=person_scope(user.row),
                code_challenge=data.get("code_challenge", ""),
                code_challenge_method=data.get("code_challenge_method") or "plain",
                expires_at=utcnow() + timedelta(seconds=self.CODE_TTL_S),
            )
        )

    def query_authorization_code(self, code: str, client: PublicClient) -> AuthCode | None:
        row = self.server.session.get(AuthorizationCodeRow, _hash(code))
        if row is None or row.client_id != client.get_client_id() or row.expires_at <= utcnow():
            return None
        return AuthCode(row)

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        self.server.session.delete(authorization_code.row)

    def authenticate_user(self, authorization_code: AuthCode) -> PersonUser | None:
        row = self.server.session.get(OAuthClient, authorization_code.row.user_id)
        return PersonUser(row) if row is not None and row.status == "active" else None


class DeviceCredential:
    def __init__(self, row: DeviceCodeRow) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_user_code(self) -> str:
        return self.row.user_code

    def is_expired(self) -> bool:
        return bool(self.row.expires_at <= utcnow())


class HubDeviceCodeGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def query_device_credential(self, device_code: str) -> DeviceCredential | None:
        row = self.server.session.get(DeviceCodeRow, _hash(device_code))
        return DeviceCredential(row) if row is not None else None

    def query_user_grant(self, user_code: str) -> tuple[PersonUser, bool] | None:
        row = self.server.session.exec(select(DeviceCodeRow).where(DeviceCodeRow.user_code == user_code)).first()
        user = self.server.session.get(OAuthClient, row.user_id) if row is not None and row.user_id else None
        if row is None or user is None:
            return None  # nobody has answered yet
        if row.denied:
            return PersonUser(user), False
        self.server.session.delete(row)  # one token per approval
        return PersonUser(user), True

    def should_slow_down(self, credential: DeviceCredential) -> bool:
        row = credential.row
        now = utcnow()
        too_soon = row.last_poll_at is not None and (now - row.last_poll_at).total_seconds() < row.interval_s - 0.5
        row.last_poll_at = now
        self.server.session.add(row)
        return bool(too_soon)


class HubDeviceAuthorizationEndpoint(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["none"]
    EXPIRES_IN = 600
    INTERVAL = 5

    def get_verification_uri(self) -> str:
        return f"{self.server.settings.issuer}/device"

    def save_device_credential(self, client_id: str, scope: str | None, data: dict[str, Any]) -> None:
        self.server.session.add(
            DeviceCodeRow(
                device_code_hash=_hash(data["device_code"]),
                user_code=data["user_code"],
                client_id=client_id,
                scope=scope or "",
                expires_at=utcnow() + timedelta(seconds=self.EXPIRES_IN),
                interval_s=self.INTERVAL,
            )
        )


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


USER_GRANTS = ("authorization_code", DEVICE_CODE_GRANT_TYPE)


class HubTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, settings: HubSettings, keys: KeyCache, session: Session) -> None:
        def lifetime(client: Any, grant_type: str) -> int:
            return settings.session_lifetime_s if grant_type in USER_GRANTS else settings.token_lifetime_s

        super().__init__(issuer=settings.issuer, alg=ALG, expires_generator=lifetime)
        self._settings = settings
        self._keys = keys
        self._session = session

    def get_jwks(self) -> KeySet:
        # A key set (not a bare key) makes joserfc put the key's ``kid`` in the header. The
        # cache reads in its own transaction, never in this request's (see KeyCache).
        return KeySet([ECKey.import_key(self._keys.signing_jwk())])

    def get_audiences(self, client: HubClient, user: Any, scope: str) -> str:
        return self._settings.token_audience

    def get_extra_claims(self, client: HubClient | PublicClient, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        claims: dict[str, Any] = {}
        if isinstance(user, PersonUser):  # a person signed in through the dashboard or the CLI
            row = user.row
            claims["sid"] = start_session(self._session, row, client.get_client_id(), self._settings.session_lifetime_s).id
        else:
            assert isinstance(client, HubClient)
            row = client.row
        claims["role"] = row.role
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
        self.settings = settings
        self.register_grant(HubClientCredentialsGrant)
        self.register_grant(HubAuthorizationCodeGrant, [S256Only(required=True)])
        self.register_grant(HubDeviceCodeGrant)
        self.register_endpoint(HubDeviceAuthorizationEndpoint)
        self.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJWTAuth(session, [settings.token_endpoint, settings.issuer]))
        self.register_token_generator("default", HubTokenGenerator(settings, keys, session))

    def query_client(self, client_id: str) -> HubClient | PublicClient | None:
        if client_id == DASHBOARD_CLIENT:
            return PublicClient(DASHBOARD_CLIENT, "authorization_code", (f"{self.settings.issuer}/dashboard/",))
        if client_id == CLI_CLIENT:
            return PublicClient(CLI_CLIENT, DEVICE_CODE_GRANT_TYPE)
        row = self.session.get(OAuthClient, client_id)
        return HubClient(row) if row else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        user = request.user
        row: OAuthClient = user.row if isinstance(user, PersonUser) else request.client.row
        row.last_token_at = utcnow()
        self.session.add(row)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: StarletteOAuth2Request) -> StarletteOAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if status in (302, 303):  # the authorization endpoint's redirect back to the client
            return Response(status_code=303, headers=dict(headers))
        content = json.loads(body) if isinstance(body, str) else body
        return JSONResponse(content, status_code=status, headers=dict(headers))


def prune_used_assertions(session: Session) -> int:
    rows = session.exec(select(UsedAssertion).where(col(UsedAssertion.expires_at) < utcnow())).all()
    for row in rows:
        session.delete(row)
    return len(rows)
