"""Creating and disabling accounts; bootstrapping the first network admin."""

from __future__ import annotations

import secrets

from sqlmodel import Session, col, select

from hub.auth.models import OAuthClient
from hub.auth.people import SETUP_CODE_TTL_S, new_setup_code
from hub.auth.principal import Principal
from hub.auth.server import hash_secret, new_secret
from hub.errors import Conflict, NotFound
from hub.sites.models import Site
from hub.sites.queries import get_site_by_name
from hub.types import utcnow
from shared.schemas.auth import AccountCreate, AccountCredentials, ClientPublic, ClientStatus, Role


def client_public(session: Session, row: OAuthClient) -> ClientPublic:
    site = session.get(Site, row.site_id) if row.site_id is not None else None
    return ClientPublic(
        client_id=row.client_id,
        name=row.name,
        kind=row.kind,
        role=Role(row.role),
        site=site.name if site else None,
        institution=row.institution,
        status=ClientStatus(row.status),
        auth_method=row.auth_method,
        created_at=row.created_at,
        last_token_at=row.last_token_at,
    )


def create_account(session: Session, data: AccountCreate, created_by: str) -> AccountCredentials:
    site_id = None
    institution = data.institution
    if data.site:
        site = get_site_by_name(session, data.site)
        site_id = site.id
        institution = institution or site.institution
    secret = new_secret()
    prefix = {Role.NETWORK_ADMIN: "admin", Role.SITE_ADMIN: "siteadmin", Role.RESEARCHER: "user"}[data.role]
    row = OAuthClient(
        client_id=f"{prefix}-{secrets.token_hex(6)}",
        name=data.name,
        kind=data.kind.value,
        role=data.role.value,
        site_id=site_id,
        institution=institution,
        auth_method="client_secret_basic",
        secret_hash=hash_secret(secret),
        created_by=created_by,
    )
    code = None
    if data.username:
        if session.exec(select(OAuthClient.client_id).where(OAuthClient.username == data.username)).first():
            raise Conflict(f"username {data.username!r} is taken")
        row.username = data.username
        code = new_setup_code(row, SETUP_CODE_TTL_S)
    session.add(row)
    session.flush()
    return AccountCredentials(**client_public(session, row).model_dump(), client_secret=secret, setup_code=code)


def list_accounts(session: Session) -> list[ClientPublic]:
    rows = session.exec(select(OAuthClient).where(OAuthClient.kind != "agent").order_by(col(OAuthClient.created_at)))
    return [client_public(session, r) for r in rows]


def disable_account(session: Session, principal: Principal, client_id: str) -> OAuthClient:
    row = session.get(OAuthClient, client_id)
    if row is None or row.kind == "agent":
        raise NotFound(f"no account {client_id!r}")
    if row.client_id == principal.client_id:
        raise Conflict("you cannot disable your own account")
    row.status = "disabled"
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def bootstrap_admin(session: Session, name: str) -> AccountCredentials:
    """Create the first network admin. Refused once any network admin exists."""
    exists = session.exec(select(OAuthClient.client_id).where(OAuthClient.role == Role.NETWORK_ADMIN.value)).first()
    if exists is not None:
        raise Conflict("a network admin already exists; ask them to create more accounts")
    return create_account(session, AccountCreate(name=name, role=Role.NETWORK_ADMIN), created_by="bootstrap")
