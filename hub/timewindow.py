"""Reading a ``since``/``until`` query window the same way on every route that takes one."""

from __future__ import annotations

from datetime import datetime, timedelta

from hub.errors import BadRequest
from hub.types import utcnow


def window(since: datetime | None, until: datetime | None, default: timedelta) -> tuple[datetime, datetime]:
    until = until or utcnow()
    since = since or until - default
    if since.tzinfo is None or until.tzinfo is None:
        raise BadRequest("since and until must carry a timezone, e.g. 2026-01-01T00:00:00Z")
    if since > until:
        raise BadRequest("since is after until")
    return since, until
