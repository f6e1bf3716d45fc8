"""Learning from finished runs, and reading what was learned for the broker."""

from __future__ import annotations

from sqlmodel import Session, select

from hub.estimates.model import Stat, observation
from hub.estimates.models import RuntimeStat
from hub.types import utcnow
from shared.schemas.jobs import JobSpec


def learn(session: Session, site_id: int, spec: JobSpec, gpu_model: str | None, wall_s: float) -> None:
    """A run of ``spec`` finished (COMPLETE) at the site after ``wall_s``: fold it into the site's stats."""
    row = session.get(RuntimeStat, (site_id, spec.kind.value)) or RuntimeStat(site_id=site_id, kind=spec.kind.value)
    s = Stat(row.n, row.mean, row.m2).add(observation(spec, gpu_model, wall_s))
    row.n, row.mean, row.m2, row.updated_at = s.n, s.mean, s.m2, utcnow()
    session.add(row)


def stats_by_site(session: Session) -> dict[int, dict[str, Stat]]:
    out: dict[int, dict[str, Stat]] = {}
    for r in session.exec(select(RuntimeStat)):
        out.setdefault(r.site_id, {})[r.kind] = Stat(r.n, r.mean, r.m2)
    return out
