"""Tables for capacity: the latest snapshot per site and a downsampled history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime


class CapacityLatest(SQLModel, table=True):
    __tablename__ = "capacity_latest"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    received_at: datetime = Field(sa_type=UTCDateTime)
    sampled_at: datetime = Field(sa_type=UTCDateTime)
    agent_version: str = Field(max_length=50)
    backend: str = Field(max_length=20)
    totals: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    partitions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    storage: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))


class CapacityBucket(SQLModel, table=True):
    """One history bucket: running sums so the average is exact, and minima."""

    __tablename__ = "capacity_history"
    __table_args__ = (UniqueConstraint("site_id", "bucket_start"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    bucket_start: datetime = Field(sa_type=UTCDateTime, index=True)
    samples: int = 0
    cpus_total: int = 0
    cpus_free_sum: int = 0
    cpus_free_min: int = 0
    gpus: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
