"""Costing attempts for the ledger, and institutions' budgets: what was spent this month,
whether a new job may still be submitted, and what to warn about."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.broker.rules import PartitionView
from hub.costs.models import Budget
from hub.costs.pricing import cheapest
from hub.errors import Conflict, Forbidden, NotFound
from hub.jobs.models import UsageEntry
from hub.sites.models import PartitionRow
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.costs import BudgetPublic, BudgetSet, BudgetState
from shared.schemas.sites import PartitionCost


def attempt_cost(
    session: Session, site_id: int, cpus: int, gpus: int, gpu_model: str | None, wall_s: float,
    partition: str | None = None, node_started: bool | None = None,
) -> float:  # fmt: skip
    """What an attempt that held ``cpus``/``gpus`` for ``wall_s`` cost at the site: on the
    partition the broker sent it to, or (attempts from before partitions were chosen, a
    partition since removed) on the cheapest of the site's registered partitions that fits.
    A cloud node's start-up is charged when the agent said a node was started for the attempt,
    or did not say (older agents); not when the attempt ran on a node already up. 0 where the
    site declares no prices."""
    rows = session.exec(select(PartitionRow).where(PartitionRow.site_id == site_id)).all()
    views = [
        PartitionView(r.name, r.node_count, r.cores_per_node, r.memory_gb_per_node, r.gpu_model.lower() if r.gpu_model else None,
                      r.gpus_per_node, r.spot, PartitionCost.model_validate(r.cost) if r.cost else None)
        for r in rows
    ]  # fmt: skip
    models = {gpu_model} if gpus and gpu_model else None
    priced = cheapest([p for p in views if p.name == partition], cpus, gpus, models) or cheapest(views, cpus, gpus, models)
    if priced is None:
        return 0.0
    if node_started is False:
        priced = replace(priced, startup_s=0)
    return round(priced.cost(wall_s), 6)


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spent(session: Session, institution: str, now: datetime) -> float:
    """What the institution's jobs cost this calendar month (UTC), from the ledger."""
    total = session.exec(
        select(func.coalesce(func.sum(UsageEntry.cost), 0.0)).where(
            UsageEntry.institution == institution, col(UsageEntry.ended_at) >= month_start(now)
        )
    ).one()
    return float(total or 0.0)


def spent_by_institution(session: Session, since: datetime, until: datetime) -> dict[str, float]:
    """What each institution's attempts that ended in [since, until] cost, from the ledger (one query)."""
    rows = session.exec(
        select(UsageEntry.institution, func.coalesce(func.sum(UsageEntry.cost), 0.0))
        .where(col(UsageEntry.ended_at) >= since, col(UsageEntry.ended_at) <= until)
        .group_by(col(UsageEntry.institution))
    ).all()
    return {institution: float(total or 0.0) for institution, total in rows}


def _public(session: Session, b: Budget, currency: str, now: datetime) -> BudgetPublic:
    used = spent(session, b.institution, now)
    if used >= b.monthly_limit:
        state = BudgetState.EXCEEDED
    elif used >= b.warn_at * b.monthly_limit:
        state = BudgetState.WARNING
    else:
        state = BudgetState.OK
    return BudgetPublic(
        institution=b.institution, currency=currency, monthly_limit=b.monthly_limit, warn_at=b.warn_at, enforce=b.enforce,
        month=month_start(now).strftime("%Y-%m"), spent=round(used, 2), remaining=round(max(b.monthly_limit - used, 0.0), 2),
        state=state, updated_at=b.updated_at, updated_by=b.updated_by,
    )  # fmt: skip


def _may_read(principal: Principal, institution: str) -> bool:
    return principal.role is Role.NETWORK_ADMIN or (principal.role is not Role.AGENT and principal.institution == institution)


def get(session: Session, principal: Principal, institution: str, currency: str) -> BudgetPublic:
    """An institution's budget: its own people and network admins (anyone else: 404, as if none)."""
    b = session.get(Budget, institution)
    if b is None or not _may_read(principal, institution):
        raise NotFound(f"no budget for institution {institution!r}")
    return _public(session, b, currency, utcnow())


def list_budgets(session: Session, principal: Principal, currency: str) -> list[BudgetPublic]:
    """Every budget (network admins) or the caller's institution's."""
    now = utcnow()
    rows = session.exec(select(Budget).order_by(col(Budget.institution))).all()
    return [_public(session, b, currency, now) for b in rows if _may_read(principal, b.institution)]


def put(session: Session, principal: Principal, institution: str, data: BudgetSet, currency: str) -> BudgetPublic:
    """Set an institution's budget: network admins only."""
    if principal.role is not Role.NETWORK_ADMIN:
        raise Forbidden("only network admins set budgets")
    b = session.get(Budget, institution) or Budget(institution=institution, monthly_limit=data.monthly_limit,
                                                     updated_by=principal.label())  # fmt: skip
    b.monthly_limit, b.warn_at, b.enforce = data.monthly_limit, data.warn_at, data.enforce
    b.updated_at, b.updated_by = utcnow(), principal.label()
    session.add(b)
    session.flush()
    return _public(session, b, currency, b.updated_at)


def delete(session: Session, principal: Principal, institution: str) -> None:
    """Remove an institution's budget (its jobs are then not limited): network admins only."""
    if principal.role is not Role.NETWORK_ADMIN:
        raise Forbidden("only network admins remove budgets")
    b = session.get(Budget, institution)
    if b is None:
        raise NotFound(f"no budget for institution {institution!r}")
    session.delete(b)
    session.flush()


def refuse_if_exhausted(session: Session, institution: str, currency: str) -> None:
    """Before a job is accepted: 409 when the institution's enforced budget is used up this month."""
    b = session.get(Budget, institution)
    if b is None or not b.enforce:
        return
    used = spent(session, institution, utcnow())
    if used >= b.monthly_limit:
        raise Conflict(
            f"{_spending(institution, used, b, currency)}; new jobs are refused until next month or until a network "
            "admin raises the budget (cryomesh budgets set)"
        )


def warnings(session: Session, institution: str, currency: str) -> list[str]:
    """What to tell someone whose job was just accepted: their institution's budget is nearly or wholly spent."""
    b = session.get(Budget, institution)
    if b is None:
        return []
    used = spent(session, institution, utcnow())
    if used >= b.monthly_limit:
        return [f"{_spending(institution, used, b, currency)} (over budget; the limit is not enforced)"]
    if used >= b.warn_at * b.monthly_limit:
        return [f"{_spending(institution, used, b, currency)} ({used / b.monthly_limit:.0%})"]
    return []


def _spending(institution: str, used: float, b: Budget, currency: str) -> str:
    month = month_start(utcnow()).strftime("%Y-%m")
    return f"institution {institution} has spent {used:.2f} of its {b.monthly_limit:.2f} {currency} budget for {month}"
