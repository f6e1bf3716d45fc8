"""Heartbeats: keep the latest snapshot, fold it into the history, track reachability."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from hub.capacity.models import CapacityBucket, CapacityLatest
from hub.errors import NotFound
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.sites.service import record_measured_software
from hub.types import utcnow
from shared.schemas.capacity import (
    CapacityHistory,
    CapacityPoint,
    CapacityTotals,
    GpuCount,
    GpuHistory,
    Heartbeat,
    HeartbeatAck,
    SiteCapacity,
)


def totals_of(hb: Heartbeat) -> CapacityTotals:
    if hb.totals is not None:
        return hb.totals
    gpus: dict[str, GpuCount] = {}
    for p in hb.partitions:
        for g in p.gpus:
            c = gpus.setdefault(g.model, GpuCount())
            c.total += g.total
            c.free += g.free
    return CapacityTotals(
        cpus_total=sum(p.cpus_total for p in hb.partitions),
        cpus_free=sum(p.cpus_idle for p in hb.partitions),
        memory_total_mb=sum(p.memory_total_mb for p in hb.partitions),
        memory_free_mb=sum(p.memory_free_mb for p in hb.partitions),
        gpus=gpus,
        jobs_pending=sum(p.jobs_pending for p in hb.partitions),
    )


def _bucket_start(t: datetime, bucket_s: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket_s, tz=t.tzinfo)


def _fold_into_history(session: Session, site_id: int, at: datetime, totals: CapacityTotals, bucket_s: int) -> None:
    start = _bucket_start(at, bucket_s)
    bucket = session.exec(
        select(CapacityBucket).where(CapacityBucket.site_id == site_id, CapacityBucket.bucket_start == start)
    ).first()
    if bucket is None:
        bucket = CapacityBucket(site_id=site_id, bucket_start=start, cpus_free_min=totals.cpus_free)
    gpus: dict[str, Any] = dict(bucket.gpus)
    for model, c in totals.gpus.items():
        old = gpus.get(model, {"free_sum": 0, "free_min": c.free})
        gpus[model] = {"total": c.total, "free_sum": old["free_sum"] + c.free, "free_min": min(old["free_min"], c.free)}
    bucket.gpus = gpus
    bucket.samples += 1
    bucket.cpus_total = totals.cpus_total
    bucket.cpus_free_sum += totals.cpus_free
    bucket.cpus_free_min = min(bucket.cpus_free_min, totals.cpus_free)
    session.add(bucket)


def record_heartbeat(session: Session, site: Site, hb: Heartbeat, settings: HubSettings) -> HeartbeatAck:
    assert site.id is not None
    now = utcnow()
    totals = totals_of(hb)
    latest = session.get(CapacityLatest, site.id) or CapacityLatest(
        site_id=site.id,
        received_at=now,
        sampled_at=hb.sampled_at,
        agent_version=hb.agent_version,
        backend=hb.backend,
        totals={},
        partitions=[],
        storage=[],
    )
    latest.received_at = now
    latest.sampled_at = hb.sampled_at
    latest.agent_version = hb.agent_version
    latest.backend = hb.backend
    latest.totals = totals.model_dump()
    latest.partitions = [p.model_dump() for p in hb.partitions]
    latest.storage = [s.model_dump() for s in hb.storage]
    session.add(latest)
    _fold_into_history(session, site.id, now, totals, settings.history_bucket_s)
    if hb.software is not None:
        record_measured_software(session, site.id, hb.software, now)
    site.last_heartbeat_at = now
    site.heartbeat_interval_s = hb.interval_s
    site.agent_version = hb.agent_version
    site.reachability = "online"
    session.add(site)
    session.flush()
    return HeartbeatAck(site=site.name, received_at=now, next_in_s=hb.interval_s)


def latest_capacity(session: Session, site: Site) -> SiteCapacity:
    row = session.get(CapacityLatest, site.id)
    if row is None:
        raise NotFound(f"site {site.name} has not reported its capacity yet")
    return SiteCapacity(
        site=site.name,
        received_at=row.received_at,
        sampled_at=row.sampled_at,
        agent_version=row.agent_version,
        backend=row.backend,
        totals=CapacityTotals.model_validate(row.totals),
        partitions=row.partitions,
        storage=row.storage,
    )


def history(session: Session, site: Site, since: datetime, until: datetime, bucket_s: int) -> CapacityHistory:
    rows = session.exec(
        select(CapacityBucket)
        .where(CapacityBucket.site_id == site.id, CapacityBucket.bucket_start >= since, CapacityBucket.bucket_start <= until)
        .order_by(col(CapacityBucket.bucket_start))
    ).all()
    points = [
        CapacityPoint(
            bucket_start=b.bucket_start,
            samples=b.samples,
            cpus_total=b.cpus_total,
            cpus_free_avg=b.cpus_free_sum / b.samples if b.samples else 0.0,
            cpus_free_min=b.cpus_free_min,
            gpus={
                m: GpuHistory(total=g["total"], free_avg=g["free_sum"] / b.samples if b.samples else 0.0, free_min=g["free_min"])
                for m, g in b.gpus.items()
            },
        )
        for b in rows
    ]
    return CapacityHistory(site=site.name, bucket_s=bucket_s, points=points)


def mark_unreachable(session: Session, settings: HubSettings, now: datetime | None = None) -> list[str]:
    """Sites whose agent missed ``missed_heartbeats`` beats in a row become unreachable."""
    now = now or utcnow()
    changed = []
    for site in session.exec(select(Site).where(Site.reachability == "online")):
        interval = site.heartbeat_interval_s or settings.heartbeat_interval_s
        if site.last_heartbeat_at is None or now - site.last_heartbeat_at > timedelta(
            seconds=interval * settings.missed_heartbeats
        ):
            site.reachability = "unreachable"
            session.add(site)
            changed.append(site.name)
    session.flush()
    return changed


def prune_history(session: Session, retention: timedelta) -> int:
    old = session.exec(select(CapacityBucket).where(CapacityBucket.bucket_start < utcnow() - retention)).all()
    for b in old:
        session.delete(b)
    return len(old)
