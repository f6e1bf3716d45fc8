"""Capacity over time for the dashboard's chart: one site's history buckets, or the whole
network's summed bucket by bucket.

A site whose heartbeats missed a bucket (a late heartbeat, a loaded machine) counts in that
bucket with its value from the bucket before, up to ``CARRY_BUCKETS`` back; otherwise the
network's sum would dip by that site's whole capacity for one point. A site silent for
longer drops out of the sum, as it should.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.models import CapacityBucket
from hub.sites.models import Site

CARRY_BUCKETS = 2


def summed_history(
    session: Session, since: datetime, site: str | None, bucket_s: int, buffer: HistoryBuffer
) -> list[dict[str, Any]]:
    """Points ``{"t", "cpus_total", "cpus_free", "gpus": {model: {"total", "free"}}}`` in time order,
    with this process's heartbeats not yet written (``buffer``) counted."""
    stmt = select(CapacityBucket).join(Site, col(Site.id) == CapacityBucket.site_id)
    stmt = stmt.where(col(CapacityBucket.bucket_start) >= since)
    site_ids = None
    if site:
        stmt = stmt.where(Site.name == site)
        site_ids = {i for i in session.exec(select(Site.id).where(Site.name == site)) if i is not None}
    by_site: dict[int, dict[datetime, CapacityBucket]] = defaultdict(dict)
    for row in buffer.read(stmt, since, site_ids):
        by_site[row.site_id][row.bucket_start] = row
    step = timedelta(seconds=bucket_s)
    points = []
    for t in sorted({t for buckets in by_site.values() for t in buckets}):
        p: dict[str, Any] = {"t": t, "cpus_total": 0, "cpus_free": 0.0, "gpus": {}}
        for buckets in by_site.values():
            b = next((buckets[t - k * step] for k in range(CARRY_BUCKETS + 1) if t - k * step in buckets), None)
            if b is None or not b.samples:
                continue
            p["cpus_total"] += b.cpus_total
            p["cpus_free"] += b.cpus_free_sum / b.samples
            for model, g in b.gpus.items():
                q = p["gpus"].setdefault(model, {"total": 0, "free": 0.0})
                q["total"] += g["total"]
                q["free"] += g["free_sum"] / b.samples
        points.append(p)
    return points
