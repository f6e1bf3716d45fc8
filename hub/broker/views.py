"""Loading the broker's in-memory view of every site: a handful of queries per pass."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from hub.broker.rules import Network, PartitionView, SiteView
from hub.capacity.models import CapacityLatest
from hub.datasets.models import Dataset, Replica
from hub.estimates.service import stats_by_site
from hub.jobs.models import Attempt, SitePolicyRow
from hub.sites.models import Site
from hub.sites.queries import site_children
from hub.transfers.models import Transfer
from shared.schemas.capacity import CapacityTotals, PartitionCapacity
from shared.schemas.datasets import ReplicaState
from shared.schemas.sites import PartitionCost, SitePolicy

RELIABILITY_WINDOW = timedelta(days=7)
TRANSFER_WINDOW = timedelta(days=30)


def policy_of(row: SitePolicyRow | None) -> SitePolicy:
    if row is None:
        return SitePolicy()
    return SitePolicy.model_validate(row.model_dump(exclude={"site_id", "updated_at"}), extra="ignore")


def reported_partitions(snap: CapacityLatest) -> list[PartitionView]:
    """A site that describes no partitions in the registry is judged by what its agent reports."""
    out = []
    for raw in snap.partitions:
        p = PartitionCapacity.model_validate(raw)
        nodes = max(p.nodes_total, 1)
        gpu = max(p.gpus, key=lambda g: g.total) if p.gpus else None
        out.append(PartitionView(p.name, nodes, max(p.cpus_total // nodes, 1), p.memory_total_mb / 1024 / nodes,
                                 gpu.model if gpu else None, gpu.total // nodes if gpu else 0))  # fmt: skip
    return out


def transfer_rates(session: Session, now: datetime) -> dict[tuple[int, int], float]:
    """Median bytes/s of the finished transfers between each pair of sites over the last 30 days
    (request to done: what bringing data there has taken, approval and publishing included)."""
    samples: dict[tuple[int, int], list[float]] = defaultdict(list)
    done = session.execute(
        sa_select(col(Transfer.source_site_id), col(Transfer.dest_site_id), col(Transfer.bytes_total),
                  col(Transfer.created_at), col(Transfer.finished_at))
        .where(col(Transfer.state) == "DONE", col(Transfer.finished_at) >= now - TRANSFER_WINDOW)
    )  # fmt: skip
    for src, dst, size, started, finished in done:
        seconds = (finished - started).total_seconds() if finished else 0
        if size > 0 and seconds > 0:
            samples[(src, dst)].append(size / seconds)
    return {pair: statistics.median(rates) for pair, rates in samples.items()}


def load_site_views(session: Session, now: datetime) -> list[SiteView]:
    sites = session.exec(select(Site).order_by(col(Site.name))).all()
    ids = [s.id for s in sites if s.id is not None]
    parts, soft, _ = site_children(session, ids)
    policies = {p.site_id: p for p in session.exec(select(SitePolicyRow))}
    latest = {c.site_id: c for c in session.exec(select(CapacityLatest))}
    views: dict[int, SiteView] = {}
    for s in sites:
        assert s.id is not None
        v = SiteView(
            id=s.id, name=s.name, institution=s.institution, country=s.country, status=s.status,
            reachability=s.reachability,
            partitions=[PartitionView(p.name, p.node_count, p.cores_per_node, p.memory_gb_per_node,
                                      p.gpu_model.lower() if p.gpu_model else None, p.gpus_per_node, p.spot,
                                      PartitionCost.model_validate(p.cost) if p.cost else None) for p in parts[s.id]],
            software=[(x.name, x.version, x.cuda_arch) for x in soft[s.id]],
            policy=policy_of(policies.get(s.id)),
        )  # fmt: skip
        snap = latest.get(s.id)
        if snap is not None and not v.partitions:
            v.partitions = reported_partitions(snap)
        if snap is not None:
            totals = CapacityTotals.model_validate(snap.totals)
            v.has_snapshot = True
            v.cpus_total, v.cpus_free, v.jobs_pending = totals.cpus_total, totals.cpus_free, totals.jobs_pending
            v.gpus_total = {m: g.total for m, g in totals.gpus.items()}
            v.gpus_free = {m: g.free for m, g in totals.gpus.items()}
        views[s.id] = v
    # Federated work holding resources, and what the latest snapshot cannot have seen yet.
    # A job waiting for its inputs to be copied ("staging") holds its place too.
    active = session.exec(select(Attempt).where(col(Attempt.state).in_(("staging", "offered", "claimed")))).all()
    for a in active:
        v = views[a.site_id]
        v.fed_cpus += a.cpus
        if a.gpu_model:
            v.fed_gpus[a.gpu_model] = v.fed_gpus.get(a.gpu_model, 0) + a.gpus
        snap = latest.get(a.site_id)
        started = a.started_at or a.claimed_at or a.offered_at
        if snap is None or a.state == "offered" or a.started_at is None or started > snap.sampled_at:
            v.unseen_cpus += a.cpus
            if a.gpu_model:
                v.unseen_gpus[a.gpu_model] = v.unseen_gpus.get(a.gpu_model, 0) + a.gpus
    # Where the data is: datasets with an AVAILABLE replica at each site (for locality), and
    # what copying the rest takes (shared by every view).
    network = Network(dataset_bytes=dict(session.exec(select(Dataset.id, Dataset.total_bytes)).all()),
                      pair_bps=transfer_rates(session, now))  # fmt: skip
    for dataset_id, site_id in session.exec(
        select(Replica.dataset_id, Replica.site_id).where(Replica.state == ReplicaState.AVAILABLE.value)
    ):
        network.holders.setdefault(dataset_id, set()).add(site_id)
        if site_id in views:
            views[site_id].datasets.add(dataset_id)
    for v in views.values():
        v.network = network
    # Reliability over the last week: lost attempts and system errors count against a site.
    good: dict[int, int] = defaultdict(int)
    bad: dict[int, int] = defaultdict(int)
    recent = session.exec(
        select(Attempt.site_id, Attempt.state, Attempt.tes_state).where(col(Attempt.ended_at) >= now - RELIABILITY_WINDOW)
    ).all()
    for site_id, state, tes in recent:
        if state == "lost" or tes == "SYSTEM_ERROR":
            bad[site_id] += 1
        elif state == "ended":
            good[site_id] += 1
    for site_id, v in views.items():
        v.reliability = (good[site_id] + 1) / (good[site_id] + bad[site_id] + 1)
    for site_id, stats in stats_by_site(session).items():
        if site_id in views:
            views[site_id].runtime_stats = stats
    return list(views.values())
