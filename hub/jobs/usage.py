"""The usage ledger, aggregated: who borrowed (institutions) and who lent (sites)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.jobs.models import UsageEntry
from shared.schemas.auth import Role
from shared.schemas.jobs import UsageReport, UsageRow


def _rows(entries: list[UsageEntry], key: str) -> list[UsageRow]:
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    gpu: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        k = getattr(e, key)
        hours = e.wall_s / 3600
        acc[k]["attempts"] += 1
        acc[k]["wall"] += hours
        acc[k]["cpu"] += hours * e.cpus
        if e.gpus and e.gpu_model:
            gpu[k][e.gpu_model] += hours * e.gpus
    return [
        UsageRow(key=k, attempts=int(v["attempts"]), wall_hours=round(v["wall"], 4), cpu_hours=round(v["cpu"], 4),
                 gpu_hours={m: round(h, 4) for m, h in sorted(gpu[k].items())})
        for k, v in sorted(acc.items())
    ]  # fmt: skip


def report(session: Session, principal: Principal, since: datetime, until: datetime) -> UsageReport:
    stmt = select(UsageEntry).where(col(UsageEntry.ended_at) >= since, col(UsageEntry.ended_at) <= until)
    entries = list(session.exec(stmt))
    consumed, provided = entries, entries
    if principal.role is not Role.NETWORK_ADMIN:
        # People see their own institution's consumption, and a site admin their site's lending.
        consumed = [e for e in entries if e.institution == principal.institution]
        provided = [e for e in entries if principal.role is Role.SITE_ADMIN and e.site == principal.site]
    return UsageReport(since=since, until=until, consumed_by_institution=_rows(consumed, "institution"),
                       provided_by_site=_rows(provided, "site"))  # fmt: skip
