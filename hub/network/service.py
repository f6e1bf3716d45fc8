"""What the whole network has and has free."""

from __future__ import annotations

from collections import Counter

from sqlmodel import Session, col, select

from hub.capacity.models import CapacityLatest
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.capacity import CapacityTotals, GpuCount
from shared.schemas.network import NetworkSummary, SiteSummary


def summary(session: Session) -> NetworkSummary:
    now = utcnow()
    rows = session.exec(
        select(Site, CapacityLatest)
        .join(CapacityLatest, col(CapacityLatest.site_id) == Site.id, isouter=True)
        .order_by(col(Site.name))
    ).all()
    by_status: Counter[str] = Counter()
    by_reach: Counter[str] = Counter()
    cpus_total = cpus_free = 0
    gpus: dict[str, GpuCount] = {}
    sites = []
    for site, latest in rows:
        by_status[site.status] += 1
        by_reach[site.reachability] += 1
        totals = CapacityTotals.model_validate(latest.totals) if latest else None
        # Only capacity the network can use right now counts toward the totals.
        if totals and site.status == "active" and site.reachability == "online":
            cpus_total += totals.cpus_total
            cpus_free += totals.cpus_free
            for model, c in totals.gpus.items():
                agg = gpus.setdefault(model, GpuCount())
                agg.total += c.total
                agg.free += c.free
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
                capacity=totals,
            )
        )
    return NetworkSummary(
        generated_at=now,
        sites_by_status=dict(by_status),
        sites_by_reachability=dict(by_reach),
        cpus_total=cpus_total,
        cpus_free=cpus_free,
        gpus=dict(sorted(gpus.items())),
        sites=sites,
    )
