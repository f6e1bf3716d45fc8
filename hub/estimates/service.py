"""Learning from finished runs, and reading what was learned for the broker."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlmodel import Session, col, select

from hub.broker.rules import SiteView, evaluate, price, runtime, static_verdict
from hub.estimates.model import Stat, observation
from hub.estimates.models import RuntimeStat
from hub.types import utcnow
from shared.schemas.jobs import JobEstimate, JobSpec, RuntimeEstimate, SiteEstimate


def learn(session: Session, site_id: int, spec: JobSpec, gpu_model: str | None, wall_s: float) -> None:
    """A run of ``spec`` finished (COMPLETE) at the site after ``wall_s``: fold it into the site's stats."""
    row = session.get(RuntimeStat, (site_id, spec.kind.value)) or RuntimeStat(site_id=site_id, kind=spec.kind.value)
    s = Stat(row.n, row.mean, row.m2).add(observation(spec, gpu_model, wall_s))
    row.n, row.mean, row.m2, row.updated_at = s.n, s.mean, s.m2, utcnow()
    session.add(row)


def stats_by_site(session: Session, only: Collection[int] | None = None) -> dict[int, dict[str, Stat]]:
    """What finished runs taught, by site and kind (of the sites ``only``, or all)."""
    out: dict[int, dict[str, Stat]] = {}
    rows = select(RuntimeStat) if only is None else select(RuntimeStat).where(col(RuntimeStat.site_id).in_(only))
    for r in session.exec(rows):
        out.setdefault(r.site_id, {})[r.kind] = Stat(r.n, r.mean, r.m2)
    return out


def per_site(views: list[SiteView], spec: JobSpec, institution: str, now: datetime, currency: str) -> JobEstimate:
    """Every site's verdict on the job with its run-time estimate and cost, eligible sites first
    (shortest p50 first): what ``cryomesh jobs estimate`` shows, without submitting."""
    out = []
    for v in views:
        verdict = evaluate(spec, institution, v, now, set())
        if verdict.never:
            out.append(SiteEstimate(site=v.name, eligible=False, reasons=verdict.reasons, runtime=None, cost=None))
            continue
        _, models = static_verdict(spec, institution, v)
        model = verdict.gpu_model or (models[0] if models else None)
        e = runtime(spec, v, model)
        priced = price(spec, v, [model] if model else [])
        out.append(SiteEstimate(
            site=v.name, eligible=verdict.eligible, reasons=verdict.reasons,
            runtime=RuntimeEstimate(p10=e.p10, p50=e.p50, p90=e.p90, runs=e.runs, basis=e.basis),
            cost=round(verdict.parts.get("cost", priced.cost(e.p50)), 2) if priced else None,
            startup_s=int(verdict.parts.get("startup_s", priced.startup_s if priced else 0)),
        ))  # fmt: skip
    out.sort(key=lambda s: (not s.eligible, s.runtime is None, s.runtime.p50 + s.startup_s if s.runtime else 0, s.site))
    return JobEstimate(currency=currency, spec=spec, sites=out)
