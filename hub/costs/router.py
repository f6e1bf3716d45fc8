"""Budget routes.

Who may call:
- list, show: people; network admins see every institution's budget, others only their own
  institution's (another institution's answers 404, as if it had none); agents: 403;
- set, remove: network admins only (others: 403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hub.costs import service
from hub.deps import Person, SessionDep, SettingsDep, TransactionRoute
from hub.errors import AUTH_ERRORS, NotFound, responses
from shared.schemas.costs import BudgetPublic, BudgetSet

router = APIRouter(prefix="/api/v1/budgets", tags=["budgets"], route_class=TransactionRoute)

Institution = Annotated[str, Path(min_length=1, max_length=200, description="Institution slug, e.g. 'kek'")]


@router.get("", responses=responses(*AUTH_ERRORS))
def list_budgets(session: SessionDep, principal: Person, settings: SettingsDep) -> list[BudgetPublic]:
    """Budgets the caller may see, with this month's spending."""
    return service.list_budgets(session, principal, settings.currency)


@router.get("/{institution}", responses=responses(*AUTH_ERRORS, NotFound))
def show_budget(institution: Institution, session: SessionDep, principal: Person, settings: SettingsDep) -> BudgetPublic:
    """One institution's budget and what it has spent this month."""
    return service.get(session, principal, institution, settings.currency)


@router.put("/{institution}", responses=responses(*AUTH_ERRORS))
def set_budget(
    institution: Institution, body: BudgetSet, session: SessionDep, principal: Person, settings: SettingsDep
) -> BudgetPublic:
    """Set (or replace) an institution's monthly budget. Network admins only."""
    return service.put(session, principal, institution, body, settings.currency)


@router.delete("/{institution}", status_code=204, responses=responses(*AUTH_ERRORS, NotFound))
def remove_budget(institution: Institution, session: SessionDep, principal: Person) -> None:
    """Remove an institution's budget: its jobs are no longer limited. Network admins only."""
    service.delete(session, principal, institution)
