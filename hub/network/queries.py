"""The network's totals as SQL aggregates: a few grouped scans, no rows loaded per site.

Capacity lives in ``capacity_latest.totals`` (JSON), so the sums read into it with the
dialect's JSON functions: ``json_extract``/``json_each`` on SQLite, ``->>``/``json_each``
on PostgreSQL. Only active, online sites count: capacity the network can use right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from shared.schemas.capacity import GpuCount

_SQLITE_CPUS = """
SELECT coalesce(sum(json_extract(c.totals, '$.cpus_total')), 0), coalesce(sum(json_extract(c.totals, '$.cpus_free')), 0)
FROM capacity_latest c JOIN sites s ON s.id = c.site_id WHERE s.status = 'active' AND s.reachability = 'online'"""
_SQLITE_GPUS = """
SELECT g.key, sum(json_extract(g.value, '$.total')), sum(json_extract(g.value, '$.free'))
FROM capacity_latest c JOIN sites s ON s.id = c.site_id, json_each(c.totals, '$.gpus') g
WHERE s.status = 'active' AND s.reachability = 'online' GROUP BY g.key"""
_PG_CPUS = """
SELECT coalesce(sum((c.totals::json ->> 'cpus_total')::bigint), 0), coalesce(sum((c.totals::json ->> 'cpus_free')::bigint), 0)
FROM capacity_latest c JOIN sites s ON s.id = c.site_id WHERE s.status = 'active' AND s.reachability = 'online'"""
_PG_GPUS = """
SELECT g.key, sum((g.value ->> 'total')::bigint), sum((g.value ->> 'free')::bigint)
FROM capacity_latest c JOIN sites s ON s.id = c.site_id CROSS JOIN LATERAL json_each(c.totals::json -> 'gpus') g
WHERE s.status = 'active' AND s.reachability = 'online' GROUP BY g.key"""

#: One row per (status, reachability): its count, newest id, last edit and last heartbeat.
_SITE_GROUPS = """
SELECT status, reachability, count(*), max(id), max(updated_at), max(last_heartbeat_at)
FROM sites GROUP BY status, reachability ORDER BY status, reachability"""
_CAPACITY_VERSION = "SELECT count(*), max(received_at) FROM capacity_latest"


@dataclass(frozen=True)
class SiteCounts:
    """Sites by status and by reachability, and what tells whether any site changed."""

    by_status: dict[str, int]
    by_reachability: dict[str, int]
    version: tuple[Any, ...]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def site_counts(session: Session) -> SiteCounts:
    """Counts by status and reachability, plus a version of the sites and their capacity.

    The version changes whenever the summary can: a site added (count, newest id), removed
    (count), edited or its status changed (``updated_at``), heard from (the newest
    heartbeat; a site only comes online through one), marked unreachable (the count per
    reachability), or its capacity reported (``capacity_latest``'s newest ``received_at``)."""
    groups = session.connection().execute(text(_SITE_GROUPS)).all()
    capacity = session.connection().execute(text(_CAPACITY_VERSION)).one()
    by_status: dict[str, int] = {}
    by_reach: dict[str, int] = {}
    for status, reach, n, *_ in groups:
        by_status[status] = by_status.get(status, 0) + n
        by_reach[reach] = by_reach.get(reach, 0) + n
    version = (*(tuple(_plain(x) for x in row) for row in groups), tuple(_plain(x) for x in capacity))
    return SiteCounts(by_status, by_reach, version)


def _plain(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


#: CPUs total and free, GPUs by model.
Capacity = tuple[int, int, dict[str, GpuCount]]


def usable_capacity(session: Session) -> Capacity:
    """CPUs total and free, and GPUs by model, summed over active online sites."""
    pg = session.connection().dialect.name == "postgresql"
    cpus_total, cpus_free = session.connection().execute(text(_PG_CPUS if pg else _SQLITE_CPUS)).one()
    gpus = {
        str(model): GpuCount(total=int(total or 0), free=int(free or 0))
        for model, total, free in session.connection().execute(text(_PG_GPUS if pg else _SQLITE_GPUS))
    }
    return int(cpus_total), int(cpus_free), dict(sorted(gpus.items()))
