"""Enrollment: a network admin issues a one-time code, the site's agent sends its public
key with the code, a network admin approves. Only then can the agent get tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import update
from sqlmodel import Session, col, select

from hub.auth.models import EnrollmentCodeRow, EnrollmentRow, OAuthClient
from hub.auth.principal import Principal
from hub.auth.server import PRIVATE_KEY_JWT
from hub.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from hub.sites.models import Site
from hub.sites.queries import get_site_by_name
from hub.types import utcnow
from shared.schemas.auth import (
    ClientPublic,
    EnrollmentCode,
    EnrollmentPublic,
    EnrollmentRequest,
    EnrollmentStatus,
    Role,
)

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def _hash_code(code: str) -> str:
    normal = code.strip().upper().replace("-", "").replace(" ", "")
    return hashlib.sha256(normal.encode()).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(20))  # ~100 bits
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))


def validate_public_jwk(jwk: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Accept an EC P-256 or RSA (>= 2048 bit) public key; refuse anything private."""
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi")):
        raise BadRequest("public_jwk contains private key material; send only the public key")
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            key: ECKey | RSAKey = ECKey.import_key(jwk)
        elif jwk.get("kty") == "RSA":
            key = RSAKey.import_key(jwk)
            if key.raw_value.key_size < 2048:
                raise BadRequest("RSA keys must be at least 2048 bits")
        else:
            raise BadRequest("public_jwk must be an EC P-256 or RSA key")
    except (JoseError, ValueError, TypeError) as exc:
        raise BadRequest(f"public_jwk is not a valid key: {exc}") from exc
    public = key.as_dict(private=False)
    thumbprint = key.thumbprint()
    public["kid"] = thumbprint
    return public, thumbprint


def issue_code(session: Session, principal: Principal, site_name: str, ttl_s: int) -> EnrollmentCode:
    site = get_site_by_name(session, site_name)
    if site.status == "suspended":
        raise Conflict(f"site {site.name} is suspended; activate it before enrolling agents")
    assert site.id is not None
    code = _new_code()
    expires = utcnow() + timedelta(seconds=ttl_s)
    session.add(EnrollmentCodeRow(site_id=site.id, code_hash=_hash_code(code), expires_at=expires, created_by=principal.label()))
    session.flush()
    return EnrollmentCode(code=code, site=site.name, expires_at=expires)


def enroll(session: Session, req: EnrollmentRequest) -> EnrollmentPublic:
    """Consume a code and record a pending enrollment. The code is the only credential here."""
    public, thumbprint = validate_public_jwk(req.public_jwk)
    row = session.exec(select(EnrollmentCodeRow).where(EnrollmentCodeRow.code_hash == _hash_code(req.code))).first()
    if row is None:
        raise NotFound("this enrollment code is not recognised")
    now = utcnow()
    if row.used_at is not None:
        raise Conflict("this enrollment code has already been used; ask a network admin for a new one")
    if row.expires_at <= now:
        raise Gone("this enrollment code has expired; ask a network admin for a new one")
    # Claim the code with a conditional update so two enrollments racing on it can't both win.
    claimed = session.execute(
        update(EnrollmentCodeRow)
        .where(col(EnrollmentCodeRow.id) == row.id, col(EnrollmentCodeRow.used_at).is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("this enrollment code has already been used; ask a network admin for a new one")
    site = session.get(Site, row.site_id)
    assert site is not None and site.id is not None and row.id is not None
    client_id = f"agent-{site.name}-{secrets.token_hex(4)}"
    session.add(
        OAuthClient(
            client_id=client_id,
            name=f"agent on {req.hostname}",
            kind="agent",
            role=Role.AGENT.value,
            site_id=site.id,
            institution=site.institution,
            auth_method=PRIVATE_KEY_JWT,
            public_jwk=public,
            key_thumbprint=thumbprint,
            status="pending",
            created_by=f"enrollment code {row.id}",
        )
    )
    enrollment = EnrollmentRow(
        site_id=site.id,
        client_id=client_id,
        code_id=row.id,
        hostname=req.hostname,
        agent_version=req.agent_version,
        key_thumbprint=thumbprint,
    )
    session.add(enrollment)
    session.flush()
    return _enrollment_public(enrollment, site.name)


def _enrollment_public(row: EnrollmentRow, site_name: str) -> EnrollmentPublic:
    assert row.id is not None
    return EnrollmentPublic(
        id=row.id,
        site=site_name,
        client_id=row.client_id,
        hostname=row.hostname,
        key_thumbprint=row.key_thumbprint,
        status=EnrollmentStatus(row.status),
        created_at=row.created_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
    )


def list_enrollments(session: Session, status: str | None) -> list[EnrollmentPublic]:
    stmt = select(EnrollmentRow, Site.name).join(Site, col(Site.id) == EnrollmentRow.site_id)
    if status:
        stmt = stmt.where(EnrollmentRow.status == status)
    return [_enrollment_public(e, name) for e, name in session.exec(stmt.order_by(col(EnrollmentRow.id)))]


def decide(session: Session, principal: Principal, enrollment_id: int, approve: bool) -> EnrollmentPublic:
    row = session.get(EnrollmentRow, enrollment_id)
    if row is None:
        raise NotFound(f"no enrollment {enrollment_id}")
    if row.status != EnrollmentStatus.PENDING:
        raise Conflict(f"enrollment {enrollment_id} was already {row.status}")
    site = session.get(Site, row.site_id)
    client = session.get(OAuthClient, row.client_id)
    assert site is not None and client is not None
    now = utcnow()
    row.status = (EnrollmentStatus.APPROVED if approve else EnrollmentStatus.REJECTED).value
    row.decided_at, row.decided_by = now, principal.label()
    client.status = "active" if approve else "disabled"
    client.updated_at = now
    if approve and site.status == "pending":
        site.status = "active"
        site.updated_at = now
    session.add_all([row, client, site])
    session.flush()
    return _enrollment_public(row, site.name)


def _agent(session: Session, client_id: str) -> OAuthClient:
    client = session.get(OAuthClient, client_id)
    if client is None or client.kind != "agent":
        raise NotFound(f"no agent {client_id!r}")
    return client


def list_agents(session: Session, principal: Principal, site_name: str | None) -> list[ClientPublic]:
    from hub.accounts.service import client_public

    stmt = select(OAuthClient).where(OAuthClient.kind == "agent")
    if principal.role is Role.SITE_ADMIN:
        stmt = stmt.where(OAuthClient.site_id == principal.site_id)
    if site_name:
        stmt = stmt.where(OAuthClient.site_id == get_site_by_name(session, site_name).id)
    return [client_public(session, c) for c in session.exec(stmt.order_by(col(OAuthClient.created_at)))]


def revoke_agent(session: Session, principal: Principal, client_id: str) -> OAuthClient:
    """Disable an agent at once (network admins; a site admin for their own site)."""
    client = _agent(session, client_id)
    if principal.role is Role.SITE_ADMIN and client.site_id != principal.site_id:
        raise Forbidden("a site admin can revoke only their own site's agents")
    client.status = "disabled"
    client.updated_at = utcnow()
    session.add(client)
    session.flush()
    return client


def rotate_agent_key(session: Session, principal: Principal, jwk: dict[str, Any]) -> OAuthClient:
    """Replace the calling agent's public key; the caller proved it held the old one."""
    assert principal.client_id is not None
    client = _agent(session, principal.client_id)
    public, thumbprint = validate_public_jwk(jwk)
    if thumbprint == client.key_thumbprint:
        raise Conflict("this is the key already registered; generate a new one")
    client.public_jwk, client.key_thumbprint = public, thumbprint
    client.updated_at = utcnow()
    session.add(client)
    session.flush()
    return client
