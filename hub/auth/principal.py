"""Who is calling: the identity and bounds taken from a verified access token."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.schemas.auth import Role

#: Scopes each role may be granted. A token carries the ones asked for (all by default).
ROLE_SCOPES: dict[Role, tuple[str, ...]] = {
    Role.NETWORK_ADMIN: ("sites:read", "sites:write", "network:read", "admin"),
    Role.SITE_ADMIN: ("sites:read", "sites:write", "network:read"),
    Role.RESEARCHER: ("sites:read", "network:read"),
    Role.AGENT: ("agent", "sites:read"),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    issuer: str
    client_id: str | None = None  # set for clients of this hub; None for external users
    site_id: int | None = None
    site: str | None = None
    institution: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    session_id: str | None = None  # a person's sign-in (dashboard or `cryomesh login`)

    @property
    def is_network_admin(self) -> bool:
        return self.role is Role.NETWORK_ADMIN

    def label(self) -> str:
        """How this caller is named in audit fields."""
        return self.client_id or self.subject
