"""What work was expected to take and cost, beside what it took and cost, for the dashboard.

A job's estimate is the one the broker made when it placed each attempt: the placed site's
verdict, kept with the placement decision (``score_parts``: run time p10/p50/p90, copy time,
start-up, cost at the p50, the runs the model had learned from). It is never recomputed,
so a model that has learned since cannot rewrite what was expected. The actual run is the
usage ledger's entry for the attempt: its wall time and what it cost.

Who sees what keeps the rules of the ledger and of budgets: a person who may see a job sees
its estimates (the placement's verdicts show them already) and the wall time of its attempts;
an attempt's cost only where the ledger would show it to them (``usage.may_see``). Spending
and budgets per institution: network admins all institutions, others their own (a site
admin's institution is their site's), as ``/api/v1/usage`` and ``/api/v1/budgets`` do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.costs import service as costs
from hub.errors import NotFound
from hub.jobs import usage
from hub.jobs.models import Attempt, Job, PlacementRecord, UsageEntry
from shared.schemas.auth import Role
from shared.schemas.jobs import JobState


def _as_placed(record: PlacementRecord) -> dict[str, Any] | None:
    """The estimate in the placed site's verdict, as it was recorded (None for decisions from
    before estimates were kept: no run time in them)."""
    parts = next((v.get("score_parts") or {} for v in record.verdicts if v.get("site") == record.site and v.get("eligible")), {})
    if "run_s" not in parts:
        return None
    return {
        "decided_at": record.decided_at,
        "p10_s": parts.get("run_p10_s"),  # not kept by decisions older than the dashboard's comparison
        "p50_s": parts["run_s"],
        "p90_s": parts.get("run_p90_s"),
        "runs": int(parts["runs"]) if "runs" in parts else None,
        "copy_s": parts.get("copy_s", 0.0),
        "startup_s": parts.get("startup_s", 0.0),
        "finish_s": parts.get("finish_s"),
        "cost": parts.get("cost"),
    }


def _compared(estimate: dict[str, Any] | None, entry: UsageEntry | None) -> dict[str, Any] | None:
    """Actual wall time over the p50, and whether it fell inside p10-p90: for runs that
    completed (the model learns from those only; a failed run says nothing of the job's size)."""
    if estimate is None or entry is None or entry.final_state != JobState.COMPLETE.value or not estimate["p50_s"]:
        return None
    low, high = estimate["p10_s"], estimate["p90_s"]
    inside = None if low is None or high is None else low <= entry.wall_s <= high
    return {"ratio": round(entry.wall_s / estimate["p50_s"], 2), "inside_p10_p90": inside}


def estimate_beside_actual(
    session: Session, principal: Principal, job: Job, attempts: Sequence[Attempt], names: Mapping[int | None, str]
) -> list[dict[str, Any]]:
    """Per attempt of a job the caller may see (``attempts``, in order): the site, the estimate
    made when it was placed there, the actual run from the ledger (None while it has not
    ended), and the two compared."""
    placed = {
        r.attempt: r
        for r in session.exec(
            select(PlacementRecord)
            .where(PlacementRecord.job_id == job.id, PlacementRecord.outcome == "placed")
            .order_by(col(PlacementRecord.id))
        )
    }
    ledger = {e.attempt_id: e for e in session.exec(select(UsageEntry).where(UsageEntry.job_id == job.id))}
    rows = []
    for a in attempts:
        site = names.get(a.site_id)
        record = placed.get(a.number)
        estimate = _as_placed(record) if record is not None and record.site == site else None
        entry = ledger.get(a.id)
        actual = None
        if entry is not None:
            shown = usage.may_see(principal, entry)
            actual = {
                "wall_s": round(entry.wall_s, 1),
                "final_state": entry.final_state,
                "cost": entry.cost if shown else None,
                "cost_shown": shown,
            }
        rows.append({"attempt": a.number, "site": site, "partition": a.partition, "gpu_model": a.gpu_model,
                     "estimate": estimate, "actual": actual, "compared": _compared(estimate, entry)})  # fmt: skip
    return rows


def spending(
    session: Session, principal: Principal, since: datetime, until: datetime, institution: str | None, currency: str
) -> list[dict[str, Any]]:
    """Per institution the caller may see: what its jobs cost this calendar month (UTC) and in
    [since, until], and its budget (None where it has none). ``institution`` narrows to one;
    another institution's answers 404 to anyone but network admins, as a budget does."""
    mine = principal.institution
    if institution is not None and principal.role is not Role.NETWORK_ADMIN and institution != mine:
        raise NotFound(f"no usage for institution {institution!r}")
    month = costs.spent_by_institution(session, costs.month_start(until), until)
    period = costs.spent_by_institution(session, since, until)
    budgets = {b.institution: b for b in costs.list_budgets(session, principal, currency)}
    if institution is not None:
        names = {institution}
    elif principal.role is Role.NETWORK_ADMIN:
        names = set(month) | set(period) | set(budgets)
    else:
        names = {mine} if mine else set()
    return [
        {"institution": name, "month": round(month.get(name, 0.0), 2), "period": round(period.get(name, 0.0), 2),
         "budget": budgets[name].model_dump(mode="json") if name in budgets else None}
        for name in sorted(names)
    ]  # fmt: skip
