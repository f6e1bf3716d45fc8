"""The registry's change counter: one number, read with one primary-key look-up, that every
transaction writing what a site view reads from the registry raises as it commits.

Each hub process keeps its site views between submissions (hub/broker/cache.py). Telling
whether the registry changed used to cost each submission a grouped scan of every site
(about 20 ms of a 50 ms submission at 10,000 sites on a busy machine): the counter makes an
unchanged registry cost one row. It moves, in the same transaction as the change, when a
session of this codebase (any process: hub workers, the CLI, the sweep) writes a row of:

- ``sites`` (added, edited, suspended, renamed, deleted, marked unreachable by the sweep),
- ``partitions``, ``site_software`` (declared, or measured and reported by an agent),
- ``site_policies``, ``replicas`` (where data is), ``runtime_stats`` (what runs taught).

What counts as a write: an ORM object of those tables added, changed or deleted at a flush,
and an UPDATE or DELETE run with ``session.execute`` that touched a row (an INSERT always
counts). Not counted, by design: a heartbeat's sign of life, written with the connection's
Core ``execute`` (hub/capacity/service.py): it stores a capacity snapshot in the same
transaction, and the views read each new snapshot, and the state of a site that was not
online when one comes (a site heard from again). Any other Core write of those tables must
call ``note_change``. Writes from outside this codebase (an operator's ``psql``) are seen
by the views' periodic full comparison, at most ``site_view_max_age_s`` later.

The counter is raised at commit, after the transaction's last flush, so on PostgreSQL its
row is the last lock a transaction takes and is held only while it commits: two writers
cannot deadlock on it. It is the one row of ``registry_changes`` (migration 0022).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, SessionTransaction
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import Session

#: The tables a site view reads from the registry (hub/broker/views.py ``load_views``).
TABLES = frozenset({"sites", "partitions", "site_software", "site_policies", "replicas", "runtime_stats"})
_CHANGED = "cryomesh_registry_changed"
_READ = text("SELECT version FROM registry_changes WHERE id = 1")
_RAISE = text(
    "INSERT INTO registry_changes (id, version) VALUES (1, 1)"
    " ON CONFLICT (id) DO UPDATE SET version = registry_changes.version + 1"
)


def registry_changes(session: Session) -> int:
    """The counter as committed (0 before the first change)."""
    return int(session.connection().execute(_READ).scalar() or 0)


def note_change(session: Session) -> None:
    """This transaction wrote the registry in a way the listeners below cannot see."""
    session.info[_CHANGED] = True


def _watched(obj: object) -> bool:
    return getattr(type(obj), "__tablename__", None) in TABLES


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    # After the flush the lists still hold what it wrote.
    if any(_watched(o) for o in chain(session.new, session.deleted)) or any(
        _watched(o) and session.is_modified(o) for o in session.dirty
    ):
        session.info[_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> Any:
    if not (state.is_insert or state.is_update or state.is_delete):
        return None
    statement = state.statement
    if not isinstance(statement, UpdateBase) or getattr(statement.table, "name", None) not in TABLES:
        return None
    if state.is_insert:
        state.session.info[_CHANGED] = True
        return None
    result = state.invoke_statement()  # an UPDATE or DELETE that matched nothing changes nothing
    if not statement.returning_column_descriptions:
        if getattr(result, "rowcount", -1) != 0:
            state.session.info[_CHANGED] = True
        return result
    frozen = result.freeze()  # RETURNING: the rows say (SQLite's rowcount is 0 until they are read)
    if frozen.data:
        state.session.info[_CHANGED] = True
    return frozen()


@event.listens_for(Session, "before_commit")
def _raise(session: Session) -> None:
    if not session.in_transaction():
        return
    session.flush()  # the commit's own flush comes after this hook: what it writes counts too
    if session.info.pop(_CHANGED, False):
        session.connection().execute(_RAISE)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, trans: SessionTransaction) -> None:
    if trans.parent is None:  # committed (raised above) or rolled back (nothing to raise)
        session.info.pop(_CHANGED, None)
