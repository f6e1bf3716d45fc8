"""The auth version: one counter raised, in the same transaction, by every change that can
refuse a token already issued (see ``hub/auth/revocation.py`` for why). Imported by
``hub/auth/models.py`` so the flush listener is in place wherever the tables are used.

How other processes learn of it: on PostgreSQL the same transaction sends
``NOTIFY cryomesh_auth, '<version>'``. PostgreSQL delivers a notification only when its
transaction commits (and drops it on rollback), so every hub process ``LISTEN``ing
(``hub.jobs.pg_wakeups``) hears of the new version the moment it is durable, whichever
process made the change, the CLI's included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakMethod

from sqlalchemy import event, func, inspect, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from hub.auth.models import AuthVersion, OAuthClient, SignInSession
from hub.sites.models import Site

#: Columns whose change can refuse a token already issued.
WATCHED: dict[type[Any], frozenset[str]] = {
    OAuthClient: frozenset({"status", "role", "site_id", "institution"}),
    Site: frozenset({"status", "name", "institution"}),
    SignInSession: frozenset({"ended_at", "expires_at"}),
}
_RAISED = "cryomesh_auth_version"
#: PostgreSQL channel announcing a raised version; the payload is the version.
CHANNEL = "cryomesh_auth"
#: Database URL -> who to tell after a commit raised the version (weakly held: a hub's
#: cache goes when its app does). By URL, not engine: any engine of this process on the
#: same database (the CLI's, a test's) makes the refusal immediate here too.
_listeners: dict[str, list[WeakMethod[Callable[[int], None]]]] = {}


def raise_version(session: Session) -> int:
    """Raise the auth version in this transaction; announced to this process on commit."""
    table = AuthVersion.__table__  # type: ignore[attr-defined]
    stmt = update(table).where(table.c.id == 1).values(version=table.c.version + 1).returning(table.c.version)
    conn = session.connection()
    version = int(conn.execute(stmt).scalar_one())
    if conn.dialect.name == "postgresql":  # sent at commit, to every process listening
        conn.execute(select(func.pg_notify(CHANNEL, str(version))))
    session.info[_RAISED] = version
    return version


def read_version(session: Session) -> int:
    return int(session.exec(select(AuthVersion.version).where(AuthVersion.id == 1)).one())


def _revokes(obj: object, deleted: bool) -> bool:
    watched = WATCHED.get(type(obj))
    if watched is None:
        return False
    if deleted:
        return True
    attrs = inspect(obj).attrs
    return any(attrs[name].history.has_changes() for name in watched)


@event.listens_for(Session, "before_flush")
def _raise_on_change(session: Session, _context: Any, _instances: Any) -> None:
    if any(_revokes(o, False) for o in session.dirty) or any(_revokes(o, True) for o in session.deleted):
        raise_version(session)


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    version = session.info.pop(_RAISED, None)
    if version is None:
        return
    for ref in _listeners.get(_key(session.get_bind()), []):
        listener = ref()
        if listener is not None:
            listener(version)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, trans: Any) -> None:
    if trans.parent is None:  # the outermost transaction ended (committed: announced above)
        session.info.pop(_RAISED, None)


def _key(bind: Engine | Connection) -> str:
    return bind.url.render_as_string(hide_password=False) if isinstance(bind, Engine) else _key(bind.engine)


def on_raise(engine: Engine, listener: Callable[[int], None]) -> None:
    """Call ``listener(version)`` (a bound method, held weakly) after each commit in this
    process that raised the version of ``engine``'s database."""
    refs = [r for r in _listeners.get(_key(engine), []) if r() is not None]
    refs.append(WeakMethod(listener))
    _listeners[_key(engine)] = refs
