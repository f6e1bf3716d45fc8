"""Tables for institutions' monthly budgets."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class Budget(SQLModel, table=True):
    """How much an institution's jobs may cost per calendar month (UTC), in the network's currency."""

    __tablename__ = "budgets"

    institution: str = Field(primary_key=True, max_length=200)
    monthly_limit: float
    warn_at: float = Field(default=0.8, description="Share of the limit at which submitters are warned")
    enforce: bool = Field(default=True, description="Refuse new jobs once the month's spending reaches the limit")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(max_length=300)
