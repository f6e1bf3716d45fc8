"""What autogenerate compares: the models' objects made on the database at hand.

Some indexes exist on one database only (``ddl_if(dialect=...)`` on the model, e.g. the
SQLite-only narrow indexes of migration 0021). Comparing them on the other database would
propose creating them there; ``include_object`` leaves them out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def include_object(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` hook for a database of ``dialect`` ("sqlite", "postgresql")."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return reflected or only is None or only.dialect in (None, dialect)

    return include
