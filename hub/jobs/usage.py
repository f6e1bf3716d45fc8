"""The usage ledger, aggregated: what each institution's jobs used, what each site ran, and
per institution what it lent to others, borrowed from others, and used of its own.

A job that an institution's own site ran for that institution is own use: it is neither
lent nor borrowed. A site is matched to its institution through the site registry (a site
since deleted counts as an institution of its own name)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.jobs.models import UsageEntry
from hub.sites.models import Site
from shared.schemas.auth import Role
from shared.schemas.jobs import InstitutionBalance, UsageReport, UsageRow


def _rows(entries: list[UsageEntry], key: str) -> list[UsageRow]:
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    gpu: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        k = getattr(e, key)
        hours = e.wall_s / 3600
        acc[k]["attempts"] += 1
        acc[k]["wall"] += hours
        acc[k]["cpu"] += hours * e.cpus
        acc[k]["cost"] += e.cost or 0.0
        if e.gpus and e.gpu_model:
            gpu[k][e.gpu_model] += hours * e.gpus
    return [
        UsageRow(key=k, attempts=int(v["attempts"]), wall_hours=round(v["wall"], 4), cpu_hours=round(v["cpu"], 4),
                 gpu_hours={m: round(h, 4) for m, h in sorted(gpu[k].items())}, cost=round(v["cost"], 2))
        for k, v in sorted(acc.items())
    ]  # fmt: skip


def _balance(entries: list[UsageEntry], site_institution: dict[str, str]) -> list[InstitutionBalance]:
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        cpu_h, gpu_h = e.wall_s * e.cpus / 3600, e.wall_s * e.gpus / 3600
        lender = site_institution.get(e.site, e.site)
        if lender == e.institution:
            acc[e.institution]["own_cpu_hours"] += cpu_h
            acc[e.institution]["own_gpu_hours"] += gpu_h
            continue
        acc[e.institution]["borrowed_cpu_hours"] += cpu_h
        acc[e.institution]["borrowed_gpu_hours"] += gpu_h
        acc[lender]["lent_cpu_hours"] += cpu_h
        acc[lender]["lent_gpu_hours"] += gpu_h
    fields = [f for f in InstitutionBalance.model_fields if f != "institution"]
    return [InstitutionBalance(institution=inst, **{f: round(v[f], 4) for f in fields}) for inst, v in sorted(acc.items())]


def may_see(principal: Principal, entry: UsageEntry) -> bool:
    """Whether the caller may see one ledger entry (its hours and cost), as ``report`` shows
    them: network admins every entry; people their institution's; a site admin also what their
    site ran."""
    if principal.role is Role.NETWORK_ADMIN:
        return True
    if principal.role is Role.AGENT:
        return False
    return entry.institution == principal.institution or (principal.role is Role.SITE_ADMIN and entry.site == principal.site)


def report(session: Session, principal: Principal, since: datetime, until: datetime, currency: str = "USD") -> UsageReport:
    stmt = select(UsageEntry).where(col(UsageEntry.ended_at) >= since, col(UsageEntry.ended_at) <= until)
    entries = list(session.exec(stmt))
    site_institution = {name: inst for name, inst in session.exec(select(Site.name, Site.institution))}
    balance = _balance(entries, site_institution)
    consumed, provided = entries, entries
    if principal.role is not Role.NETWORK_ADMIN:
        # People see their own institution's consumption and balance, and a site admin their site's lending.
        consumed = [e for e in entries if e.institution == principal.institution]
        provided = [e for e in entries if principal.role is Role.SITE_ADMIN and e.site == principal.site]
        balance = [b for b in balance if b.institution == principal.institution]
    return UsageReport(since=since, until=until, currency=currency, consumed_by_institution=_rows(consumed, "institution"),
                       provided_by_site=_rows(provided, "site"), balance_by_institution=balance)  # fmt: skip
