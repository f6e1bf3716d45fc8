"""What each site's finished runs taught the run-time model, per job kind."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class RuntimeStat(SQLModel, table=True):
    """Runs of one kind finished at one site: count, mean and sum of squared deviations of
    ln(actual / prior) (hub/estimates/model.py)."""

    __tablename__ = "runtime_stats"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    kind: str = Field(primary_key=True, max_length=40)
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
