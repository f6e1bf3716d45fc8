"""The dashboard's API: views composed for the web page, each filtered to what the caller may see.

Who may call: people signed in (network admins, site admins, researchers), through the
dashboard's sign-in or any other token of theirs. Agents: 403. No token: 401. Within each
view the usual rules hold: a researcher sees their institution's jobs and the datasets
they may see; share requests carry ``can_decide`` where a decision of the caller is
awaited (the owner site's admin for the owner, the receiving site's admin for the
receiver, network admins for both) and ``awaiting``, the sites whose decision is missing.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import col, select

from hub.capacity.chart import summed_history
from hub.costs.service import month_start
from hub.dashboard import costs
from hub.dashboard.versions import capacity_version, jobs_version
from hub.datasets import service as datasets
from hub.datasets import shares
from hub.datasets.models import Dataset
from hub.datasets.service import DatasetFilter
from hub.deps import Person, SessionDep, SettingsDep, TransactionRoute
from hub.errors import AUTH_ERRORS, NotFound, responses
from hub.etag import NOT_MODIFIED, etag, not_modified
from hub.jobs import service as jobs
from hub.jobs import usage
from hub.jobs.models import Attempt
from hub.network.router import SitePage, conditional_summary
from hub.pictures import service as pictures
from hub.sites.models import Site
from hub.transfers import service as transfers
from hub.types import utcnow
from shared.schemas.jobs import JobState
from shared.schemas.network import NetworkSummary

router = APIRouter(
    prefix="/api/v1/dashboard", tags=["dashboard"], responses=responses(*AUTH_ERRORS), route_class=TransactionRoute
)


@router.get("/overview", response_model=NetworkSummary, responses=NOT_MODIFIED)
def overview(request: Request, response: Response, session: SessionDep, principal: Person, page: SitePage) -> Any:
    """Sites by status, free/total CPUs and GPUs by model (network-wide), and one page of sites
    with their capacity and heartbeat age (``limit``, ``offset``, filters as in
    ``/api/v1/network/summary``). ETag and 304 as there."""
    return conditional_summary("overview", request, response, session, principal, page)


@router.get("/capacity", responses=NOT_MODIFIED)
def capacity(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: Person,
    settings: SettingsDep,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    site: str | None = None,
) -> Any:
    """Capacity over time, per history bucket: one site, or the whole network (summed).

    ``hours`` is the window asked for; ``span_s`` is what the points cover (first to last
    point), ``age_s`` how old the last point is, ``bucket_s`` the time between points.
    ETag and 304 while no capacity was reported and the window moved by less than a bucket
    (so ``age_s`` in a 304'd copy may be up to one bucket old)."""
    now = utcnow()
    window = int(now.timestamp() // settings.history_bucket_s)
    tag = etag("capacity", principal, [hours, site, window], capacity_version(session))
    if unchanged := not_modified(request, response, tag):
        return unchanged
    since = now - timedelta(hours=hours)
    points = summed_history(session, since, site, settings.history_bucket_s, request.app.state.history)
    times = [p["t"] for p in points]
    return {
        "site": site,
        "hours": hours,
        "bucket_s": settings.history_bucket_s,
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "span_s": (times[-1] - times[0]).total_seconds() if times else 0.0,
        "age_s": round((now - times[-1]).total_seconds(), 1) if times else None,
        "points": points,
    }


@router.get("/jobs", responses=NOT_MODIFIED)
def job_list(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: Person,
    state: JobState | None = None,
    site: str | None = None,
    institution: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Jobs the caller may see, newest first, with counts by state and site and why each is where it is.
    ETag (per caller: what a person may see is part of it) and 304 while no job, attempt or decision changed."""
    tag = etag("jobs", principal, [state, site, institution, limit], jobs_version(session))
    if unchanged := not_modified(request, response, tag):
        return unchanged
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
def job_detail(job_id: str, session: SessionDep, principal: Person, settings: SettingsDep) -> dict[str, Any]:
    """One job: its spec, timeline (attempts), logs tail, placement reasons (why here / why still
    queued), the pictures its site sent (a classification's class averages), and per attempt the
    estimate made when it was placed beside the actual run (``runs``; costs in ``currency``, an
    attempt's cost only where the caller may see it in the usage ledger: hub/dashboard/costs.py)."""
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
        "pictures": _pictures(session, "job", job.id, settings.public_url),
        "currency": settings.currency,
        "runs": costs.estimate_beside_actual(session, principal, job, attempts, names),
    }


def _pictures(session: SessionDep, subject: pictures.Subject, subject_id: str, base: str) -> list[dict[str, Any]]:
    """The subject's pictures with each PNG inline as a data URL (an <img> cannot send the
    page's bearer token; they are small and bounded, see ``shared.schemas.pictures``)."""
    out = []
    for p in pictures.listing(session, subject, subject_id, base.rstrip("/")):
        data = base64.b64encode(pictures.png(session, subject, subject_id, p.name)).decode()
        out.append({**p.model_dump(mode="json"), "src": f"data:image/png;base64,{data}"})
    return out


@router.get("/datasets/{dataset_id}", responses=responses(NotFound))
def dataset_detail(dataset_id: str, session: SessionDep, principal: Person, settings: SettingsDep) -> dict[str, Any]:
    """One dataset: its description (pixel size, instrument, ...), replicas, provenance and thumbnails."""
    ds = datasets.get_visible(session, principal, dataset_id)
    (public,) = datasets.to_public(session, [ds])
    return {"dataset": public.model_dump(mode="json"), "pictures": _pictures(session, "dataset", ds.id, settings.public_url)}


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
        assert ds is not None
        pub["can_decide"] = shares.may_decide(principal, req, ds)
        site_of = {"owner": pub["owner_site"], "receiver": pub["dest_site"]}
        pub["awaiting"] = [f"{side.value} {site_of[side.value]}" for side in shares.awaiting(req)]
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


@router.get("/usage", responses=responses(NotFound))
def lent_and_borrowed(
    session: SessionDep,
    principal: Person,
    settings: SettingsDep,
    days: Annotated[float, Query(gt=0, le=3660)] = 30,
    institution: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> dict[str, Any]:
    """CPU- and GPU-hours lent to others, borrowed from others and used of one's own, per institution
    (network admins: all; others: their own institution). Own use is neither lent nor borrowed.

    ``costs``: per institution, what its jobs cost this calendar month (UTC, ``month``) and in the
    last ``days``, in the hub's ``currency``, with its budget (limit, warn_at, enforced or not,
    spent) where it has one. ``institution`` narrows ``costs`` and ``institutions`` to one
    institution; another institution's answers 404 to anyone but network admins (as
    ``/api/v1/budgets/{institution}`` does)."""
    until = utcnow()
    since = until - timedelta(days=days)
    spending = costs.spending(session, principal, since, until, institution, settings.currency)
    report = usage.report(session, principal, since, until, settings.currency)
    rows = [b.model_dump(mode="json") for b in report.balance_by_institution if institution in (None, b.institution)]
    return {
        "since": since, "until": until, "institutions": rows, "report": report.model_dump(mode="json"),
        "currency": settings.currency, "month": month_start(until).strftime("%Y-%m"), "costs": spending,
    }  # fmt: skip
