"""The network's totals as SQL aggregates: a few grouped scans, no rows loaded per site.

Capacity is summed from the integer columns a heartbeat writes beside its snapshot
(``capacity_latest.cpus_total`` …, see ``summed_columns``), grouped by the site's only GPU
model; the few sites with several models are summed out of their snapshot JSON, with the
dialect's JSON functions (``json_each`` on SQLite, ``json_each``/``->>`` on PostgreSQL).
Only active, online sites count: capacity the network can use right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from shared.schemas.capacity import GpuCount

_USABLE = "FROM capacity_latest c JOIN sites s ON s.id = c.site_id WHERE s.status = 'active' AND s.reachability = 'online'"
_SUMS = "SELECT c.gpu_model, coalesce(sum(c.cpus_total), 0), coalesce(sum(c.cpus_free), 0), sum(c.gpus_total), sum(c.gpus_free)"
#: CPUs and the GPUs of sites with one model, per model (NULL: none or several). SQLite is
#: told which indexes to read: left to itself it looks each site up in both tables (rowid),
#: reading their wide rows, two to three times slower at 10,000 sites.
_PG_COUNTS = f"{_SUMS} {_USABLE} GROUP BY c.gpu_model"
_SQLITE_COUNTS = f"""{_SUMS}
FROM sites s INDEXED BY ix_sites_summary JOIN capacity_latest c INDEXED BY ix_capacity_latest_sums ON c.site_id = s.id
WHERE s.status = 'active' AND s.reachability = 'online' GROUP BY c.gpu_model"""
#: GPUs of sites with several models, per model (``gpu_models > 1``: the partial index's own condition).
_SQLITE_SEVERAL = """
SELECT g.key, sum(json_extract(g.value, '$.total')), sum(json_extract(g.value, '$.free'))
FROM capacity_latest c INDEXED BY ix_capacity_latest_several_gpus CROSS JOIN sites s, json_each(c.totals, '$.gpus') g
WHERE c.gpu_models > 1 AND s.id = c.site_id AND s.status = 'active' AND s.reachability = 'online' GROUP BY g.key"""
_PG_SEVERAL = """
SELECT g.key, sum((g.value ->> 'total')::bigint), sum((g.value ->> 'free')::bigint)
FROM capacity_latest c JOIN sites s ON s.id = c.site_id CROSS JOIN LATERAL json_each(c.totals::json -> 'gpus') g
WHERE c.gpu_models > 1 AND s.status = 'active' AND s.reachability = 'online' GROUP BY g.key"""

#: One row per (status, reachability): its count, newest id, last edit and last heartbeat.
_SITE_GROUPS = """
SELECT status, reachability, count(*), max(id), max(updated_at), max(last_heartbeat_at)
FROM sites GROUP BY status, reachability ORDER BY status, reachability"""
#: On SQLite both from indexes (the newest report by ``ix_capacity_latest_received_at``).
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
    conn = session.connection()
    cpus_total = cpus_free = 0
    gpus: dict[str, GpuCount] = {}

    def add(model: str, total: int | None, free: int | None) -> None:
        g = gpus.setdefault(model, GpuCount())
        g.total += int(total or 0)
        g.free += int(free or 0)

    pg = conn.dialect.name == "postgresql"
    for model, total, free, gpus_total, gpus_free in conn.execute(text(_PG_COUNTS if pg else _SQLITE_COUNTS)):
        cpus_total, cpus_free = cpus_total + int(total), cpus_free + int(free)
        if model is not None:
            add(str(model), gpus_total, gpus_free)
    for model, total, free in conn.execute(text(_PG_SEVERAL if pg else _SQLITE_SEVERAL)):
        add(str(model), total, free)
    return cpus_total, cpus_free, dict(sorted(gpus.items()))
