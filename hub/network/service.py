"""What the whole network has and has free: totals from SQL aggregates, sites one page at a time.

The totals are kept by each hub process for the version of the sites they were summed at
(``SiteCounts.version``, the ETag's): an unchanged version costs its grouped scan alone.
While heartbeats arrive the version moves between any two summaries, so the sums are
made cheap in themselves: integer columns written with each snapshot, read from narrow
indexes (hub/network/queries.py). Kept totals are exactly as fresh as a 304 for that version:
whatever changes them (a capacity report, a status, a site marked unreachable or added)
moves the version, so the next summary sums again.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from hub.capacity.models import CapacityLatest
from hub.network.queries import Capacity, SiteCounts, site_counts, usable_capacity
from hub.sites.models import SoftwareRow
from hub.sites.queries import SiteFilter, list_sites
from hub.types import utcnow
from shared.schemas.capacity import CapacityTotals
from shared.schemas.network import NetworkSummary, SiteSummary
from shared.schemas.software import CONTAINER_RUNTIMES


class KeptTotals:
    """The usable capacity summed at one version of the sites, kept by a hub process."""

    def __init__(self) -> None:
        self._kept: tuple[tuple[Any, ...], Capacity] | None = None
        self.sums = 0  # times summed in the database

    def get(self, session: Session, version: tuple[Any, ...]) -> Capacity:
        kept = self._kept  # one read: another thread may replace it meanwhile
        if kept is None or kept[0] != version:
            kept = self._kept = (version, usable_capacity(session))
            self.sums += 1
        cpus_total, cpus_free, gpus = kept[1]
        return cpus_total, cpus_free, dict(gpus)


def summary(
    session: Session, f: SiteFilter, limit: int, offset: int, counts: SiteCounts | None = None, kept: KeptTotals | None = None
) -> NetworkSummary:
    """Network-wide totals, and the sites matching ``f`` from ``offset`` (at most ``limit``;
    none with ``limit=0``). ``counts`` when the caller already read them (for the ETag);
    ``kept``: the process's totals, summed again only when the version moved."""
    now = utcnow()
    counts = counts or site_counts(session)
    cpus_total, cpus_free, gpus = kept.get(session, counts.version) if kept else usable_capacity(session)
    matching = counts.total
    sites: list[SiteSummary] = []
    if limit or f != SiteFilter():
        rows, matching = list_sites(session, f, limit, offset)
        ids = [s.id for s in rows]
        latest = {c.site_id: c for c in session.exec(select(CapacityLatest).where(col(CapacityLatest.site_id).in_(ids)))}
        runtimes: dict[int, list[str]] = {}
        found = select(SoftwareRow).where(col(SoftwareRow.site_id).in_(ids), col(SoftwareRow.name).in_(CONTAINER_RUNTIMES))
        for row in session.exec(found.order_by(col(SoftwareRow.name))):
            runtimes.setdefault(row.site_id, []).append(f"{row.name} {row.version}")
        for site in rows:
            snap = latest.get(site.id) if site.id is not None else None
            sites.append(
                SiteSummary(
                    name=site.name,
                    display_name=site.display_name,
                    institution=site.institution,
                    country=site.country,
                    status=site.status,
                    reachability=site.reachability,
                    last_heartbeat_at=site.last_heartbeat_at,
                    heartbeat_age_s=(now - site.last_heartbeat_at).total_seconds() if site.last_heartbeat_at else None,
                    capacity=CapacityTotals.model_validate(snap.totals) if snap else None,
                    runtimes=runtimes.get(site.id, []) if site.id is not None else [],
                )
            )
    return NetworkSummary(
        generated_at=now,
        sites_total=counts.total,
        sites_by_status=counts.by_status,
        sites_by_reachability=counts.by_reachability,
        cpus_total=cpus_total,
        cpus_free=cpus_free,
        gpus=gpus,
        sites_matching=matching,
        limit=limit,
        offset=offset,
        sites=sites,
    )
