"""Who is calling a GA4GH route: a bearer token as everywhere, or HTTP Basic.

Some workflow engines' TES clients speak only HTTP Basic. A service account's (or a
person's CLI key's) client id and secret are accepted over Basic (use TLS in production),
and the caller is that account, with its role's scopes. A Basic header without real
credentials (Snakemake's TES plugin sends ``None:None`` when no user is configured) is no
credential: 401 with ``WWW-Authenticate`` naming both schemes. Agents may not use Basic.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import anyio.from_thread
from fastapi import Depends, Request
from sqlmodel import Session

from hub import errors
from hub.auth.models import OAuthClient
from hub.auth.principal import ROLE_SCOPES, Principal
from hub.auth.server import check_secret
from hub.deps import SessionDep
from hub.sites.models import Site
from shared.schemas.auth import Role

CHALLENGE = 'Bearer, Basic realm="cryomesh"'
_PLACEHOLDERS = {"", "none", "null"}


class Unauthorized(errors.Unauthorized):
    """The hub's 401 (same name on the wire), offering both schemes, so a Basic-only client
    knows it may retry with Basic."""

    def __init__(self, detail: str) -> None:
        errors.CryomeshError.__init__(self, detail, headers={"WWW-Authenticate": CHALLENGE})


def _basic(session: Session, encoded: str) -> Principal:
    try:
        client_id, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Basic credentials are not base64 of 'client_id:secret'") from None
    if not sep or client_id.strip().lower() in _PLACEHOLDERS or secret.strip().lower() in _PLACEHOLDERS:
        raise Unauthorized("no credentials: send a bearer token, or a client id and secret over Basic")
    client = session.get(OAuthClient, client_id)
    if client is None or not check_secret(secret, client.secret_hash) or client.status != "active":
        raise Unauthorized("unknown client id or wrong secret")
    role = Role(client.role)
    if role is Role.AGENT:
        raise Unauthorized("agents authenticate with signed assertions, not Basic")
    site = session.get(Site, client.site_id) if client.site_id is not None else None
    return Principal(
        subject=client.client_id, role=role, issuer="basic", client_id=client.client_id,
        site_id=site.id if site else None, site=site.name if site else None,
        institution=client.institution or (site.institution if site else None), scopes=frozenset(ROLE_SCOPES[role]),
    )  # fmt: skip


def ga4gh_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        # This dependency runs in a worker thread (Basic needs the database): the verifier is async.
        principal: Principal = anyio.from_thread.run(request.app.state.verifier.authenticate, value)
        return principal
    if scheme.lower() == "basic":
        return _basic(session, value)
    raise Unauthorized("this endpoint needs a bearer token or Basic client credentials")


Ga4ghCaller = Annotated[Principal, Depends(ga4gh_principal)]
