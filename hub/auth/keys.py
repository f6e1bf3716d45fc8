"""The hub's token signing keys: creation, rotation and the published JWKS.

The newest unretired key signs. A retired key stays in the JWKS until every token it
signed has expired, so rotation never invalidates a token in flight.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet
from sqlmodel import Session, col, select

from hub.auth.models import SigningKey
from hub.types import utcnow

ALG = "ES256"


def _new_key() -> SigningKey:
    kid = f"hub-{utcnow():%Y%m%d}-{secrets.token_hex(4)}"
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALG, "use": "sig"}, private=True)
    return SigningKey(kid=kid, alg=ALG, private_jwk=key.as_dict(private=True))


def active_key(session: Session) -> SigningKey | None:
    return session.exec(
        select(SigningKey).where(col(SigningKey.retired_at).is_(None)).order_by(col(SigningKey.created_at).desc())
    ).first()


def ensure_active_key(session: Session) -> SigningKey:
    key = active_key(session)
    if key is None:
        key = _new_key()
        session.add(key)
        session.flush()
    return key


def rotate(session: Session) -> SigningKey:
    """Retire the signing key(s) in use and start signing with a new one."""
    now = utcnow()
    for old in session.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None))):
        old.retired_at = now
        session.add(old)
    key = _new_key()
    session.add(key)
    session.flush()
    return key


def rotate_if_due(session: Session, max_age: timedelta) -> SigningKey | None:
    key = active_key(session)
    if key is None or utcnow() - key.created_at >= max_age:
        return rotate(session)
    return None


def prune_retired(session: Session, keep_for: timedelta) -> int:
    """Delete retired keys whose tokens have all expired."""
    cutoff = utcnow() - keep_for
    old = session.exec(select(SigningKey).where(col(SigningKey.retired_at) < cutoff)).all()
    for key in old:
        session.delete(key)
    return len(old)


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    return ECKey.import_key(private).as_dict(private=False)


class KeyCache:
    """Signing and verification keys, read from the database and cached briefly.

    Loads go through the caller's session (on SQLite a second transaction would wait on
    the first). Several hub processes may share one database; a token with an unknown
    ``kid`` makes the cache reload at once, so another process's rotation is seen on first use.
    """

    def __init__(self, token_lifetime_s: int, ttl_s: float = 10.0) -> None:
        self._keep_for = timedelta(seconds=token_lifetime_s + 60)
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._signing: dict[str, Any] | None = None  # private JWK
        self._published: dict[str, dict[str, Any]] = {}  # kid -> public JWK

    def _load(self, session: Session) -> None:
        signing = ensure_active_key(session)
        cutoff: datetime = utcnow() - self._keep_for
        published = session.exec(
            select(SigningKey).where(col(SigningKey.retired_at).is_(None) | (col(SigningKey.retired_at) >= cutoff))
        ).all()
        # Plain dicts, not rows: the cache outlives the session that read it.
        self._signing = dict(signing.private_jwk)
        self._published = {k.kid: public_jwk(k.private_jwk) for k in published}
        self._loaded_at = time.monotonic()

    def _fresh(self, session: Session, force: bool = False) -> None:
        with self._lock:
            if force or time.monotonic() - self._loaded_at > self._ttl or self._signing is None:
                self._load(session)

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0

    def signing_jwk(self, session: Session) -> dict[str, Any]:
        self._fresh(session)
        assert self._signing is not None
        return self._signing

    def jwks(self, session: Session) -> dict[str, Any]:
        self._fresh(session)
        return {"keys": list(self._published.values())}

    def verification_keys(self, session: Session, kid: str | None) -> KeySet:
        self._fresh(session)
        if kid is not None and kid not in self._published:
            self._fresh(session, force=True)
        return KeySet.import_key_set(self.jwks(session))  # type: ignore[arg-type]
