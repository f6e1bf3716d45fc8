"""People who sign in: passwords, first-password codes, sessions.

Passwords are hashed with Argon2id (argon2-cffi, its recommended parameters). A network
admin creates a person's account with a username; the person sets the first password with
a one-time code (stored hashed, expiring). Each sign-in (browser or CLI) is a session;
tokens carry its id, and the hub refuses a token whose session has ended or expired, so
signing out takes effect at once.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from hub.auth.models import OAuthClient, SignInSession
from hub.errors import BadRequest, Conflict, Unauthorized
from hub.types import utcnow

HASHER = PasswordHasher()
MIN_PASSWORD = 12
SETUP_CODE_TTL_S = 7 * 86_400
#: Public clients built into the hub (no secret; PKCE or the device grant protects them).
DASHBOARD_CLIENT = "cryomesh-dashboard"
CLI_CLIENT = "cryomesh-cli"
PUBLIC_CLIENTS = (DASHBOARD_CLIENT, CLI_CLIENT)


@functools.cache
def _dummy_hash() -> str:
    """A hash to spend the same time on when the username does not exist. Made at the first
    sign-in, not at import: hashing takes a fifth of a second of CPU, which every hub process,
    CLI command and test worker importing this module would pay."""
    return HASHER.hash(secrets.token_urlsafe(16))


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def new_setup_code(row: OAuthClient, ttl_s: int) -> str:
    code = secrets.token_urlsafe(18)
    row.setup_code_hash, row.setup_expires_at = _code_hash(code), utcnow() + timedelta(seconds=ttl_s)
    return code


def set_first_password(session: Session, username: str, code: str, password: str) -> OAuthClient:
    row = session.exec(select(OAuthClient).where(OAuthClient.username == username)).first()
    valid = (
        row is not None
        and row.setup_code_hash is not None
        and hmac.compare_digest(row.setup_code_hash, _code_hash(code))
        and row.setup_expires_at is not None
        and row.setup_expires_at > utcnow()
    )
    if not valid or row is None:
        raise Unauthorized("the username or setup code is wrong, used or expired; ask a network admin for a new one")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"the password must be at least {MIN_PASSWORD} characters")
    if password.lower() in (username.lower(), (row.name or "").lower()):
        raise BadRequest("the password must not be your username or name")
    row.password_hash, row.setup_code_hash, row.setup_expires_at = HASHER.hash(password), None, None
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def authenticate(session: Session, username: str, password: str) -> OAuthClient | None:
    """The active person with this username and password, or None (same time either way)."""
    row = session.exec(select(OAuthClient).where(OAuthClient.username == username)).first()
    stored = row.password_hash if row is not None else None
    try:
        HASHER.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or stored is None or row.status != "active":
        return None
    if HASHER.check_needs_rehash(stored):
        row.password_hash = HASHER.hash(password)
        session.add(row)
    return row


def start_session(session: Session, person: OAuthClient, via: str, lifetime_s: int) -> SignInSession:
    s = SignInSession(
        id=uuid.uuid4().hex, client_id=person.client_id, via=via, expires_at=utcnow() + timedelta(seconds=lifetime_s)
    )
    session.add(s)
    session.flush()
    return s


def check_session(session: Session, sid: str) -> datetime:
    """The live sign-in's end, or 401."""
    s = session.get(SignInSession, sid)
    if s is None or s.ended_at is not None:
        raise Unauthorized("this sign-in has ended; sign in again")
    if s.expires_at <= utcnow():
        raise Unauthorized("this sign-in has expired; sign in again")
    return s.expires_at


def end_session(session: Session, sid: str) -> None:
    s = session.get(SignInSession, sid)
    if s is None:
        raise Conflict("no such sign-in")
    if s.ended_at is None:
        s.ended_at = utcnow()
        session.add(s)
        session.flush()
