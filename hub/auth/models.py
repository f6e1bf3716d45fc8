"""Tables for OAuth clients, signing keys, enrollment and assertion replay protection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class OAuthClient(SQLModel, table=True):
    """Every caller that can get a token: agents, people using the CLI, services."""

    __tablename__ = "oauth_clients"

    client_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=20)  # agent | person | service
    role: str = Field(max_length=20, index=True)
    site_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=True, index=True)
    )
    institution: str | None = Field(default=None, max_length=200)
    auth_method: str = Field(max_length=30)  # private_key_jwt | client_secret_basic
    secret_hash: str | None = Field(default=None, max_length=200)
    public_jwk: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    key_thumbprint: str | None = Field(default=None, max_length=100)
    status: str = Field(default="active", max_length=20)
    created_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_token_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # People who sign in to the dashboard or with `cryomesh login`.
    username: str | None = Field(default=None, max_length=100, unique=True, index=True)
    password_hash: str | None = Field(default=None, max_length=300)
    setup_code_hash: str | None = Field(default=None, max_length=200)
    setup_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SigningKey(SQLModel, table=True):
    """Keys the hub signs access tokens with. Retired keys stay published until their tokens expire."""

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    alg: str = Field(max_length=10)
    private_jwk: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    retired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UsedAssertion(SQLModel, table=True):
    """``jti`` of client assertions already seen, so an assertion can't be replayed."""

    __tablename__ = "used_assertions"

    jti: str = Field(primary_key=True, max_length=200)
    client_id: str = Field(max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class EnrollmentCodeRow(SQLModel, table=True):
    __tablename__ = "enrollment_codes"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False))
    code_hash: str = Field(unique=True, max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class EnrollmentRow(SQLModel, table=True):
    __tablename__ = "enrollments"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    client_id: str = Field(max_length=64)
    code_id: int
    hostname: str = Field(max_length=255)
    agent_version: str = Field(max_length=50)
    key_thumbprint: str = Field(max_length=100)
    status: str = Field(default="pending", max_length=20, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = Field(default=None, max_length=200)


class SignInSession(SQLModel, table=True):
    """A person signed in (browser or CLI). Tokens carry its id (``sid``); signing out or
    expiry ends every token of the session at once."""

    __tablename__ = "signin_sessions"

    id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(
        sa_column=Column(String(64), ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=False, index=True)
    )
    via: str = Field(max_length=40)  # the public client: cryomesh-dashboard | cryomesh-cli
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuthorizationCodeRow(SQLModel, table=True):
    """A one-time authorization code (RFC 6749 4.1) with its PKCE challenge (RFC 7636)."""

    __tablename__ = "authorization_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64)
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=False))
    redirect_uri: str = Field(max_length=2000)
    scope: str = Field(default="", max_length=500)
    code_challenge: str = Field(max_length=200)
    code_challenge_method: str = Field(max_length=10)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class DeviceCodeRow(SQLModel, table=True):
    """A device authorization (RFC 8628): the CLI polls with the device code while the person
    approves the user code in a browser."""

    __tablename__ = "device_codes"

    device_code_hash: str = Field(primary_key=True, max_length=64)
    user_code: str = Field(max_length=20, unique=True, index=True)
    client_id: str = Field(max_length=64)
    scope: str = Field(default="", max_length=500)
    user_id: str | None = Field(
        default=None, sa_column=Column(String(64), ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), nullable=True)
    )
    denied: bool = False
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    interval_s: int = 5
    last_poll_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ExternalSignIn(SQLModel, table=True):
    """A browser sign-in in progress at an external OpenID Connect provider: what to resume
    when the provider sends the person back (one-time, short-lived)."""

    __tablename__ = "external_signins"

    state_hash: str = Field(primary_key=True, max_length=64)
    issuer: str = Field(max_length=500)
    code_verifier: str = Field(max_length=200)
    nonce: str = Field(max_length=200)
    params: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class AuthVersion(SQLModel, table=True):
    """One row: a counter raised by every change that can refuse a token already issued (a
    client disabled or its role or site changed, a site suspended or renamed, a sign-in
    ended). Each hub process caches callers' principals and drops them when it sees the
    counter move: pushed with ``NOTIFY`` on PostgreSQL, and re-read at most a second apart
    (``hub/auth/revocation.py``)."""

    __tablename__ = "auth_version"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


from hub.auth import version as _version  # noqa: E402,F401  (registers the flush listener; needs the tables above)
