"""The dashboard's API: views composed for the web page, each filtered to what the caller may see.

Who may call: people signed in (network admins, site admins, researchers), through the
dashboard's sign-in or any other token of theirs. Agents: 403. No token: 401. Within each
view the usual rules hold: a researcher sees their institution's jobs and the datasets
they may see; share requests carry ``can_decide`` only for the owner site's admins and
network admins.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import col, select

from hub.capacity.models import CapacityBucket
from hub.datasets import service as datasets
from hub.datasets import shares
from hub.datasets.models import Dataset
from hub.datasets.service import DatasetFilter
from hub.deps import Person, SessionDep
from hub.errors import AUTH_ERRORS, NotFound, responses
from hub.jobs import service as jobs
from hub.jobs import usage
from hub.jobs.models import Attempt, UsageEntry
from hub.network.service import summary
from hub.sites.models import Site
from hub.transfers import service as transfers
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.jobs import JobState
from shared.schemas.network import NetworkSummary

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"], responses=responses(*AUTH_ERRORS))


@router.get("/overview")
def overview(session: SessionDep, principal: Person) -> NetworkSummary:
    """Sites by status, free/total CPUs and GPUs by model, each site's capacity and heartbeat age."""
    return summary(session)


@router.get("/capacity")
def capacity(
    session: SessionDep,
    principal: Person,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    site: str | None = None,
) -> dict[str, Any]:
    """Capacity over time, per history bucket: one site, or the whole network (summed)."""
    since = utcnow() - timedelta(hours=hours)
    stmt = select(CapacityBucket, Site.name).join(Site, col(Site.id) == CapacityBucket.site_id)
    stmt = stmt.where(col(CapacityBucket.bucket_start) >= since)
    if site:
        stmt = stmt.where(Site.name == site)
    points: dict[datetime, dict[str, Any]] = {}
    for b, _name in session.exec(stmt.order_by(col(CapacityBucket.bucket_start))):
        p = points.setdefault(b.bucket_start, {"t": b.bucket_start, "cpus_total": 0, "cpus_free": 0.0, "gpus": {}})
        p["cpus_total"] += b.cpus_total
        p["cpus_free"] += b.cpus_free_sum / b.samples if b.samples else 0
        for model, g in b.gpus.items():
            q = p["gpus"].setdefault(model, {"total": 0, "free": 0.0})
            q["total"] += g["total"]
            q["free"] += g["free_sum"] / b.samples if b.samples else 0
    return {"site": site, "hours": hours, "points": [points[t] for t in sorted(points)]}


@router.get("/jobs")
def job_list(
    session: SessionDep,
    principal: Person,
    state: JobState | None = None,
    site: str | None = None,
    institution: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Jobs the caller may see, newest first, with counts by state and site and why each is where it is."""
    items, total = jobs.list_jobs(session, principal, state, site, institution, limit, 0)
    rows: list[dict[str, Any]] = [
        {**j.model_dump(mode="json", exclude={"spec"}), "why": jobs.placement(session, principal, j.id).explanation}
        for j in items
    ]
    by_state: dict[str, int] = defaultdict(int)
    by_site: dict[str, int] = defaultdict(int)
    for row in rows:
        by_state[row["state"]] += 1
        by_site[row["site"] or "(not placed)"] += 1
    return {"total": total, "jobs": rows, "by_state": by_state, "by_site": by_site}


@router.get("/jobs/{job_id}", responses=responses(NotFound))
def job_detail(job_id: str, session: SessionDep, principal: Person) -> dict[str, Any]:
    """One job: its spec, timeline (attempts), logs tail and placement reasons (why here / why still queued)."""
    job = jobs.get_visible(session, principal, job_id)
    names = {s.id: s.name for s in session.exec(select(Site))}
    attempts = session.exec(select(Attempt).where(Attempt.job_id == job.id).order_by(col(Attempt.number))).all()
    timeline = [
        {"attempt": a.number, "site": names.get(a.site_id), "state": a.state, "reported": a.tes_state, "offered_at": a.offered_at,
         "claimed_at": a.claimed_at, "started_at": a.started_at, "ended_at": a.ended_at, "exit_code": a.exit_code,
         "reason": a.reason}
        for a in attempts
    ]  # fmt: skip
    return {
        "job": jobs.to_public(session, job).model_dump(mode="json"),
        "timeline": timeline,
        "placement": jobs.placement(session, principal, job.id).model_dump(mode="json"),
        "logs": jobs.logs(session, principal, job.id).model_dump(mode="json"),
    }


def _eta(t: dict[str, Any]) -> float | None:
    done = t["published_bytes"] if t["state"] in ("QUEUED", "PUBLISHING") else t["fetched_bytes"]
    left = t["bytes_total"] - done + (t["bytes_total"] if t["state"] in ("QUEUED", "PUBLISHING") else 0)
    return round(left / t["rate_bps"], 1) if t["rate_bps"] and t["state"] not in ("DONE", "SUSPENDED", "CANCELLED") else None


@router.get("/data")
def data(
    session: SessionDep,
    principal: Person,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The catalog with replicas, share requests (with what the caller may do), and transfers with rate and ETA."""
    items, total = datasets.search(session, principal, DatasetFilter(q=q), limit, 0)
    requests = []
    for req in shares.list_requests(session, principal, None, awaiting_me=False):
        pub = shares.to_public(session, req).model_dump(mode="json")
        ds = session.get(Dataset, req.dataset_id)
        owner_admin = principal.role is Role.SITE_ADMIN and ds is not None and principal.site_id == ds.owner_site_id
        pub["can_decide"] = req.state == "pending" and (principal.role is Role.NETWORK_ADMIN or owner_admin)
        requests.append(pub)
    moving = []
    names = transfers.site_names(session)
    for t in transfers.list_for(session, principal, None, None, limit):
        pub = transfers.to_public(session, t, names).model_dump(mode="json")
        pub["eta_s"] = _eta(pub)
        moving.append(pub)
    return {
        "datasets": [d.model_dump(mode="json") for d in items],
        "datasets_total": total,
        "share_requests": requests,
        "awaiting_me": sum(1 for r in requests if r["can_decide"]),
        "transfers": moving,
    }


@router.get("/usage")
def lent_and_borrowed(
    session: SessionDep, principal: Person, days: Annotated[float, Query(gt=0, le=3660)] = 30
) -> dict[str, Any]:
    """CPU- and GPU-hours consumed versus contributed, per institution (network admins: all;
    others: their own institution)."""
    until = utcnow()
    since = until - timedelta(days=days)
    report = usage.report(session, principal, since, until)
    site_inst = {s.name: s.institution for s in session.exec(select(Site))}
    entries = session.exec(select(UsageEntry).where(col(UsageEntry.ended_at) >= since)).all()
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        gpu_h = e.wall_s * e.gpus / 3600
        cpu_h = e.wall_s * e.cpus / 3600
        per[e.institution]["consumed_cpu_h"] += cpu_h
        per[e.institution]["consumed_gpu_h"] += gpu_h
        lender = site_inst.get(e.site, e.site)
        per[lender]["contributed_cpu_h"] += cpu_h
        per[lender]["contributed_gpu_h"] += gpu_h
    if principal.role is not Role.NETWORK_ADMIN:
        per = defaultdict(lambda: defaultdict(float), {k: v for k, v in per.items() if k == principal.institution})
    rows = [
        {"institution": inst, **{k: round(v[k], 4) for k in ("consumed_cpu_h", "consumed_gpu_h", "contributed_cpu_h",
                                                              "contributed_gpu_h")}}
        for inst, v in sorted(per.items())
    ]  # fmt: skip
    return {"since": since, "until": until, "institutions": rows, "report": report.model_dump(mode="json")}
