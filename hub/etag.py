"""Conditional GETs for the views the dashboard refreshes: weak ETags and ``304 Not Modified``.

A view's ETag is a hash of (the view's name, the caller's visibility, the query, the
version of the data it shows). The version comes from cheap aggregates over the view's
tables (counts, newest ids, ``max(updated_at)``), never from rendering the body, so an
unchanged view costs a few index or table scans and no JSON. A counter bumped on every
write was the alternative; it was not chosen because every write path (heartbeats, the
sweep's bulk updates, other branches' raw statements) would have to bump it, it would be
one hot row every heartbeat updates, and a missed bump serves stale data silently.

The caller's visibility is part of the tag: a researcher and a network admin (or two
institutions) never share a tag, so a 304 can neither reveal nor hide what another caller
sees. The tags are weak (``W/``): bodies also carry times such as ``generated_at``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request, Response

from hub.auth.principal import Principal

#: Clients may keep the body but must ask again every time (with If-None-Match).
CACHE_CONTROL = "private, no-cache"

#: For a route's ``responses=``.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: nothing this caller may see changed since the ETag sent in If-None-Match"}
}


def visibility(principal: Principal) -> tuple[Any, ...]:
    """What decides what a person sees in these views (who they are, their role, site, institution)."""
    return (principal.issuer, principal.subject, principal.role.value, principal.site_id, principal.institution)


def etag(view: str, principal: Principal, query: Any, version: Any) -> str:
    raw = json.dumps([view, visibility(principal), query, version], default=str, sort_keys=True)
    return f'W/"{hashlib.sha256(raw.encode()).hexdigest()[:32]}"'


def _matches(header: str, tag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``*`` or any listed tag, ``W/`` ignored."""
    if header.strip() == "*":
        return True
    wanted = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == wanted for t in header.split(","))


def not_modified(request: Request, response: Response, tag: str) -> Response | None:
    """Set the ETag on ``response``; a 304 to return instead when the client has this version."""
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = CACHE_CONTROL
    header = request.headers.get("if-none-match")
    if header and _matches(header, tag):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": CACHE_CONTROL})
    return None
