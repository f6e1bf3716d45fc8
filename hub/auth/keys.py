"""The hub's token signing keys: creation, rotation and the published JWKS.

The newest unretired key signs. A retired key stays in the JWKS until every token it
signed has expired, so rotation never invalidates a token in flight.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub.auth.models import SigningKey
from hub.db import transaction
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


@dataclass(frozen=True)
class _Keys:
    signing: dict[str, Any]  # private JWK
    published: dict[str, dict[str, Any]]  # kid -> public JWK
    verifying: KeySet
    loaded_at: float


class KeyCache:
    """Signing and verification keys, read from the database and cached briefly.

    Loads read in a short transaction of their own, never in a request's: the token endpoint
    signs while it holds the database's write lock, and a load inside that transaction that
    waited on a Python lock held by a reader waiting for the write lock was a deadlock. No
    lock is held while reading: two threads that both find the cache stale both read, and
    the last one's snapshot (immutable) wins. Several hub processes may share one database;
    a token with an unknown ``kid`` makes the cache reload (at most once a second), so
    another process's rotation is seen on first use.
    """

    def __init__(self, engine: Engine, token_lifetime_s: int, ttl_s: float = 10.0) -> None:
        self._engine = engine
        self._keep_for = timedelta(seconds=token_lifetime_s + 60)
        self._ttl = ttl_s
        self._keys: _Keys | None = None
        self._unknown_kid_at = 0.0

    def ensure(self) -> None:
        """Create the first signing key if there is none (at start-up, in its own transaction)."""
        with transaction(self._engine) as session:
            ensure_active_key(session)
        self.reload()

    def reload(self) -> _Keys:
        with transaction(self._engine, write=False) as session:
            signing = active_key(session)
            if signing is None:
                raise RuntimeError("the hub has no active signing key (it makes one at start-up)")
            cutoff: datetime = utcnow() - self._keep_for
            rows = session.exec(
                select(SigningKey).where(col(SigningKey.retired_at).is_(None) | (col(SigningKey.retired_at) >= cutoff))
            ).all()
            # Plain dicts, not rows: the cache outlives the session that read it.
            published = {k.kid: public_jwk(k.private_jwk) for k in rows}
            keys = _Keys(
                dict(signing.private_jwk),
                published,
                KeySet.import_key_set({"keys": list(published.values())}),
                time.monotonic(),
            )
        self._keys = keys
        return keys

    def _fresh(self) -> _Keys:
        keys = self._keys
        if keys is None or time.monotonic() - keys.loaded_at > self._ttl:
            keys = self.reload()
        return keys

    def invalidate(self) -> None:
        self._keys = None

    def signing_jwk(self) -> dict[str, Any]:
        return self._fresh().signing

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._fresh().published.values())}

    def verification_keys(self, kid: str | None) -> KeySet:
        keys = self._fresh()
        if kid is not None and kid not in keys.published and time.monotonic() - self._unknown_kid_at > 1.0:
            self._unknown_kid_at = time.monotonic()
            keys = self.reload()
        return keys.verifying
