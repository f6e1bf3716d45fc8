"""Budgets: how much an institution's jobs may cost per month."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, FiniteFloat

from shared.schemas.common import StrictModel


class BudgetSet(StrictModel):
    """An institution's monthly budget, in the network's currency."""

    monthly_limit: FiniteFloat = Field(ge=0, le=1e12, description="Most its jobs may cost per calendar month (UTC)")
    warn_at: FiniteFloat = Field(default=0.8, ge=0, le=1, description="Warn submitters once this share is spent")
    enforce: bool = Field(default=True, description="Refuse new jobs once the limit is reached (false: warn only)")


class BudgetState(StrEnum):
    OK = "ok"
    WARNING = "warning"
    EXCEEDED = "exceeded"


class BudgetPublic(BaseModel):
    institution: str
    currency: str
    monthly_limit: float
    warn_at: float
    enforce: bool
    month: str = Field(description="The calendar month (UTC) spending is counted for, e.g. '2026-12'")
    spent: float = Field(description="What the institution's finished attempts cost this month")
    remaining: float
    state: BudgetState
    updated_at: datetime
    updated_by: str
