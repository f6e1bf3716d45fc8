"""Accounts, agents and enrollment."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from shared.schemas.common import Int64, SafeStr, StrictModel


class Role(StrEnum):
    NETWORK_ADMIN = "network_admin"
    SITE_ADMIN = "site_admin"  # bound to one site
    RESEARCHER = "researcher"  # bound to one institution
    AGENT = "agent"  # bound to one site


class AccountKind(StrEnum):
    PERSON = "person"
    SERVICE = "service"


class ClientStatus(StrEnum):
    PENDING = "pending"  # an enrolled agent waiting for approval
    ACTIVE = "active"
    DISABLED = "disabled"


class AccountCreate(StrictModel):
    name: SafeStr = Field(min_length=1, max_length=200, description="Person's name or service name")
    kind: AccountKind = AccountKind.PERSON
    role: Role
    site: SafeStr | None = Field(default=None, description="Required for site_admin")
    institution: SafeStr | None = Field(default=None, max_length=200, description="Required for researcher")
    username: SafeStr | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._@-]{1,99}$",
        description="A person who signs in to the dashboard or with `cryomesh login`; they set a password with the setup code",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AccountCreate:
        if self.role is Role.AGENT:
            raise ValueError("agents are created by enrollment, not as accounts")
        if self.role is Role.SITE_ADMIN and not self.site:
            raise ValueError("a site_admin account needs a site")
        if self.role is Role.RESEARCHER and not self.institution:
            raise ValueError("a researcher account needs an institution")
        return self


class ClientPublic(BaseModel):
    client_id: str
    name: str
    kind: str
    role: Role
    site: str | None
    institution: str | None
    status: ClientStatus
    auth_method: str
    created_at: datetime
    last_token_at: datetime | None


class AccountCredentials(ClientPublic):
    """Returned once, when an account is created: the secret is not stored in clear."""

    client_secret: str
    setup_code: str | None = Field(default=None, description="One-time code to set the first password (with a username)")


class EnrollmentCodeCreate(StrictModel):
    ttl_s: Int64 = Field(default=86_400, ge=60, le=30 * 86_400, description="How long the code stays valid")


class EnrollmentCode(BaseModel):
    code: str = Field(description="One-time code; shown once")
    site: str
    expires_at: datetime


class EnrollmentRequest(BaseModel):
    """Sent by ``cryomesh agent enroll``: only the public key leaves the site."""

    code: SafeStr = Field(min_length=8, max_length=100)
    public_jwk: dict[SafeStr, SafeStr | bool | list[SafeStr]] = Field(
        max_length=30, description="The agent's public key as a JWK (EC P-256 or RSA)"
    )
    hostname: SafeStr = Field(min_length=1, max_length=255)
    agent_version: SafeStr = Field(min_length=1, max_length=50)


class EnrollmentStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class EnrollmentPublic(BaseModel):
    id: int
    site: str
    client_id: str
    hostname: str
    key_thumbprint: str
    status: EnrollmentStatus
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None


class KeyRotation(BaseModel):
    public_jwk: dict[SafeStr, SafeStr | bool | list[SafeStr]] = Field(max_length=30)


class WhoAmI(BaseModel):
    subject: str
    client_id: str | None
    role: Role
    site: str | None
    institution: str | None
    scopes: list[str]
    issuer: str
