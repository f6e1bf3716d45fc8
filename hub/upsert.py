"""INSERT … ON CONFLICT for the two databases the hub runs on.

SQLAlchemy spells it per dialect; both builders share ``on_conflict_do_update`` and
``excluded``, which is all the hub uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT into ``table`` (a table model) that can take ``on_conflict_do_update``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def least(session: Session) -> Any:
    """The SQL function for the smaller of two values (``LEAST`` on PostgreSQL, ``min`` on SQLite)."""
    from sqlalchemy import func

    return func.least if session.get_bind().dialect.name == "postgresql" else func.min
