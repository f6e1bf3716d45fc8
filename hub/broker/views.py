"""Loading the broker's in-memory view of every site: a handful of queries per pass."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from hub.broker.rules import Network, PartitionNow, PartitionView, SiteView, copy_rate
from hub.capacity.models import CapacityLatest
from hub.datasets.models import Dataset, Replica
from hub.datasets.shares import relays
from hub.estimates.service import stats_by_site
from hub.jobs.models import Attempt, SitePolicyRow
from hub.sites.models import PartitionRow, Site, SoftwareRow
from hub.transfers.links import TRANSFER_WINDOW, uplinks_shared
from hub.transfers.models import Transfer
from shared.schemas.capacity import CapacityTotals, PartitionCapacity
from shared.schemas.datasets import ReplicaState
from shared.schemas.sites import PartitionCost, SitePolicy
from shared.schemas.transfers import ACTIVE_TRANSFER_STATES

RELIABILITY_WINDOW = timedelta(days=7)


#: The lending policy's columns a policy is made of: all but the site and the edit time.
_POLICY = tuple(c for c in SitePolicyRow.__table__.columns if c.name not in ("site_id", "updated_at"))  # type: ignore[attr-defined]


def policy_of(row: SitePolicyRow | None) -> SitePolicy:
    if row is None:
        return SitePolicy()
    return SitePolicy.model_validate({c.name: getattr(row, c.name) for c in _POLICY}, extra="ignore")


class Snapshot(Protocol):
    """What a view reads of a site's latest snapshot (a ``CapacityLatest``, or a row of its columns)."""

    @property
    def totals(self) -> dict[str, Any]: ...
    @property
    def partitions(self) -> list[dict[str, Any]]: ...


def reported_partitions(snap: Snapshot) -> list[PartitionView]:
    """A site that describes no partitions in the registry is judged by what its agent reports."""
    out = []
    for raw in snap.partitions:
        p = PartitionCapacity.model_validate(raw)
        nodes = max(p.nodes_total, 1)
        gpu = max(p.gpus, key=lambda g: g.total) if p.gpus else None
        out.append(PartitionView(p.name, nodes, max(p.cpus_total // nodes, 1), p.memory_total_mb / 1024 / nodes,
                                 gpu.model if gpu else None, gpu.total // nodes if gpu else 0, p.spot))  # fmt: skip
    return out


def apply_snapshot(v: SiteView, snap: Snapshot, registry_partitions: bool) -> None:
    """What the site's latest heartbeat says it has free now and could start (elastic
    partitions), and its partitions when the registry describes none."""
    if not registry_partitions:
        v.partitions = reported_partitions(snap)
    totals = CapacityTotals.model_validate(snap.totals)
    v.has_snapshot = True
    v.cpus_total, v.cpus_free, v.jobs_pending = totals.cpus_total, totals.cpus_free, totals.jobs_pending
    v.gpus_total = {m: g.total for m, g in totals.gpus.items()}
    v.gpus_free = {m: g.free for m, g in totals.gpus.items()}
    v.cpus_bootable = totals.cpus_bootable
    v.gpus_bootable = dict(totals.gpus_bootable)
    v.boot_s = max((p.get("resume_timeout_s") or 0 for p in snap.partitions if p.get("elastic")), default=0)
    # Read as stored (validated when the heartbeat came): this runs for every site at each load.
    v.part_now = {p["name"]: _partition_now(p) for p in snap.partitions}


def _partition_now(p: dict[str, Any]) -> PartitionNow:
    gpus = p.get("gpus", ())
    return PartitionNow(
        cpus_free=p.get("cpus_idle", 0), cpus_bootable=p.get("cpus_bootable", 0),
        gpus_free={g["model"]: g.get("free", 0) for g in gpus},
        gpus_bootable={g["model"]: g["bootable"] for g in gpus if g.get("bootable")}, boot_s=p.get("resume_timeout_s") or 0,
    )  # fmt: skip


Active = tuple[int, str, int, int, str | None, datetime | None, datetime, str | None]


def active_attempts(session: Session) -> list[Active]:
    """Federated work holding resources: (site, state, cpus, gpus, gpu model, started, started or claimed or offered,
    partition).
    A job waiting for its inputs to be copied ("staging") holds its place too."""
    a = Attempt
    rows = session.execute(  # columns, not ORM objects: this runs for every submission (hub/broker/cache.py)
        sa_select(
            *(
                col(c)
                for c in (a.site_id, a.state, a.cpus, a.gpus, a.gpu_model, a.started_at, a.claimed_at, a.offered_at, a.partition)
            )
        ).where(col(a.state).in_(("staging", "offered", "claimed")))
    ).all()
    return [(site, state, cpus, gpus, model, started, started or claimed or offered, partition)
            for site, state, cpus, gpus, model, started, claimed, offered, partition in rows]  # fmt: skip


def apply_attempts(
    views: dict[int, SiteView],
    attempts: list[Active],
    sampled_at: dict[int, datetime],
) -> set[int]:
    """Add active attempts to the views, and what the latest snapshot cannot have seen yet
    (sampled before the attempt started). The sites touched."""
    touched = set()
    for site_id, state, cpus, gpus, model, started_at, started, partition in attempts:
        v = views.get(site_id)
        if v is None:
            continue
        touched.add(site_id)
        v.fed_cpus += cpus
        if model:
            v.fed_gpus[model] = v.fed_gpus.get(model, 0) + gpus
        seen_at = sampled_at.get(site_id)
        if seen_at is None or state == "offered" or started_at is None or started > seen_at:
            v.unseen_cpus += cpus
            if model:
                v.unseen_gpus[model] = v.unseen_gpus.get(model, 0) + gpus
            if (now := v.part_now.get(partition or "")) is not None:
                now.unseen_cpus += cpus
                if model:
                    now.unseen_gpus[model] = now.unseen_gpus.get(model, 0) + gpus
    return touched


def transfer_rates(session: Session, now: datetime) -> dict[tuple[int, int], float]:
    """The throughput of each pair of sites from its finished transfers over the last 30 days
    (``rules.copy_rate``: request to done, less the set-up the estimate adds back)."""
    samples: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    done = session.execute(
        sa_select(col(Transfer.source_site_id), col(Transfer.dest_site_id), col(Transfer.bytes_total),
                  col(Transfer.created_at), col(Transfer.finished_at))
        .where(col(Transfer.state) == "DONE", col(Transfer.finished_at) >= now - TRANSFER_WINDOW)
    )  # fmt: skip
    for src, dst, size, started, finished in done:
        seconds = (finished - started).total_seconds() if finished else 0
        if size > 0 and seconds > 0:
            samples[(src, dst)].append((size, seconds))
    rates = {pair: copy_rate(sizes) for pair, sizes in samples.items()}
    return {pair: rate for pair, rate in rates.items() if rate is not None}


def transfers_in_flight(session: Session) -> dict[tuple[int, int], list[int]]:
    """The bytes each transfer under way (queued, publishing, fetching) still has to move, by
    pair of sites: a copy placed on the same link shares its rate with them."""
    ahead: dict[tuple[int, int], list[int]] = defaultdict(list)
    for src, dst, total, fetched in session.execute(
        sa_select(col(Transfer.source_site_id), col(Transfer.dest_site_id), col(Transfer.bytes_total),
                  col(Transfer.fetched_bytes))
        .where(col(Transfer.state).in_([s.value for s in ACTIVE_TRANSFER_STATES]))
        .order_by(col(Transfer.id))
    ):  # fmt: skip
        if total > fetched:
            ahead[(src, dst)].append(total - fetched)
    return dict(ahead)


def reliability(session: Session, now: datetime, only: Collection[int] | None = None) -> dict[int, float]:
    """Each site's reliability over the last week (of the sites ``only``, or all): lost
    attempts and system errors count against it. Sites with no attempt ended in that week are
    left out (1.0)."""
    good: dict[int, int] = defaultdict(int)
    bad: dict[int, int] = defaultdict(int)
    ended = select(Attempt.site_id, Attempt.state, Attempt.tes_state).where(col(Attempt.ended_at) >= now - RELIABILITY_WINDOW)
    recent = session.exec(_of(ended, Attempt.site_id, only)).all()
    for site_id, state, tes in recent:
        if state == "lost" or tes == "SYSTEM_ERROR":
            bad[site_id] += 1
        elif state == "ended":
            good[site_id] += 1
    return {site_id: (good[site_id] + 1) / (good[site_id] + bad[site_id] + 1) for site_id in good.keys() | bad.keys()}


def load_site_views(session: Session, now: datetime) -> list[SiteView]:
    return list(load_views(session, now)[0].values())


def load_views(
    session: Session, now: datetime, only: Collection[int] | None = None, network: Network | None = None
) -> tuple[dict[int, SiteView], dict[int, datetime], set[int]]:
    """Every site's view by id, when each site's latest snapshot was sampled, and the sites
    whose partitions the registry describes (the others are judged by what they report).

    ``only``: just these sites (a registry change to them, hub/broker/cache.py), sharing
    ``network``, the data network the other views hold (read afresh when not given)."""
    # Columns, not ORM objects: a pass loads every site, and building 1,000 sites, their
    # partitions, software, policies and snapshots as ORM objects cost more than the rows.
    sites = session.execute(_of(
        sa_select(col(Site.id), col(Site.name), col(Site.institution), col(Site.country), col(Site.status),
                  col(Site.reachability)).order_by(col(Site.name)), Site.id, only)
    ).all()  # fmt: skip
    parts: dict[int, list[PartitionView]] = defaultdict(list)
    p = PartitionRow
    for site_id, name, nodes, cores, memory, model, gpus, spot, cost in session.execute(_of(
        sa_select(col(p.site_id), col(p.name), col(p.node_count), col(p.cores_per_node), col(p.memory_gb_per_node),
                  col(p.gpu_model), col(p.gpus_per_node), col(p.spot), col(p.cost)).order_by(col(p.name), col(p.id)),
        p.site_id, only)
    ):  # fmt: skip
        parts[site_id].append(PartitionView(name, nodes, cores, memory, model.lower() if model else None, gpus, spot,
                                            PartitionCost.model_validate(cost) if cost else None))  # fmt: skip
    soft: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    sw = SoftwareRow
    for site_id, package, version, arch in session.execute(_of(
        sa_select(col(sw.site_id), col(sw.name), col(sw.version), col(sw.cuda_arch)).order_by(col(sw.name), col(sw.id)),
        sw.site_id, only)
    ):  # fmt: skip
        soft[site_id].append((package, version, arch))
    names = [c.name for c in _POLICY]
    policies = {
        site_id: SitePolicy.model_validate(dict(zip(names, values, strict=True)), extra="ignore")
        for site_id, *values in session.execute(_of(sa_select(col(SitePolicyRow.site_id), *_POLICY), SitePolicyRow.site_id, only))
    }
    c = CapacityLatest
    latest = {snap.site_id: snap for snap in session.execute(_of(
        sa_select(col(c.site_id), col(c.sampled_at), col(c.totals), col(c.partitions)), c.site_id, only)
    )}  # fmt: skip
    views: dict[int, SiteView] = {}
    described: set[int] = set()
    for site_id, name, institution, country, status, reachability in sites:
        v = SiteView(
            id=site_id, name=name, institution=institution, country=country, status=status, reachability=reachability,
            partitions=parts.get(site_id, []), software=soft.get(site_id, []),
            policy=policies[site_id] if site_id in policies else SitePolicy(),
        )  # fmt: skip
        if v.partitions:
            described.add(site_id)
        snap = latest.get(site_id)
        if snap is not None:
            apply_snapshot(v, snap, site_id in described)
        views[site_id] = v
    sampled_at = {site_id: snap.sampled_at for site_id, snap in latest.items()}
    apply_attempts(views, active_attempts(session), sampled_at)
    if network is None:
        # Where the data is: datasets with an AVAILABLE replica at each site (for locality), and
        # what copying the rest takes (shared by every view).
        network = Network(dataset_bytes=dict(session.exec(select(Dataset.id, Dataset.total_bytes)).all()),
                          pair_bps=transfer_rates(session, now), in_flight=transfers_in_flight(session),
                          uplinks=uplinks_shared(session))  # fmt: skip
        network.holders, network.owners, network.relays = holders(session), owners(session), relays(session)
    for dataset_id, sites_with in network.holders.items():
        for site_id in sites_with:
            if site_id in views:
                views[site_id].datasets.add(dataset_id)
    for v in views.values():
        v.network = network
        network.names[v.id] = v.name
    ran = reliability(session, now, only)
    for site_id, v in views.items():
        v.reliability = ran.get(site_id, 1.0)
    for site_id, stats in stats_by_site(session, only).items():
        if site_id in views:
            views[site_id].runtime_stats = stats
    return views, sampled_at, described


def holders(session: Session) -> dict[str, set[int]]:
    """The sites with an AVAILABLE replica of each dataset."""
    out: dict[str, set[int]] = {}
    for dataset_id, site_id in session.exec(
        select(Replica.dataset_id, Replica.site_id).where(Replica.state == ReplicaState.AVAILABLE.value)
    ):
        out.setdefault(dataset_id, set()).add(site_id)
    return out


def owners(session: Session) -> dict[str, int]:
    """Each dataset's owner site."""
    return dict(session.exec(select(Dataset.id, Dataset.owner_site_id)).all())


def _of(stmt: Any, site_id: Any, only: Collection[int] | None) -> Any:
    return stmt if only is None else stmt.where(col(site_id).in_(only))
