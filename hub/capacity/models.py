"""Tables for capacity: the latest snapshot per site and a downsampled history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime
from shared.schemas.capacity import CapacityTotals


def _count(name: str) -> Any:
    return Field(default=0, sa_column=Column(name, BigInteger, nullable=False, server_default=text("0")))


class CapacityLatest(SQLModel, table=True):
    """A site's latest snapshot. Beside the snapshot (JSON, as reported), the counts a
    network summary adds up, as plain integers written with it (``summed_columns``): summing
    10,000 sites' integers costs a fraction of reading 10,000 JSON documents. GPUs by model
    are summed from ``gpu_model`` (the site's only model) and, for the few sites with
    several models (``gpu_models > 1``, an index of their own), from the snapshot's JSON."""

    __tablename__ = "capacity_latest"
    __table_args__ = (
        # SQLite only: what the summary reads of each active online site, so it never reads
        # the snapshots, and the newest report (the summary's version) without a scan. Each
        # heartbeat updates them; PostgreSQL's summary hash-joins the tables and needs neither
        # (and updates that change no indexed column stay HOT there).
        Index("ix_capacity_latest_sums", "site_id", "gpu_model", "cpus_total", "cpus_free", "gpus_total", "gpus_free").ddl_if(
            dialect="sqlite"
        ),
        Index("ix_capacity_latest_received_at", "received_at").ddl_if(dialect="sqlite"),
        Index(
            "ix_capacity_latest_several_gpus",
            "site_id",
            sqlite_where=text("gpu_models > 1"),
            postgresql_where=text("gpu_models > 1"),
        ),
    )

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    received_at: datetime = Field(sa_type=UTCDateTime)
    sampled_at: datetime = Field(sa_type=UTCDateTime)
    agent_version: str = Field(max_length=50)
    backend: str = Field(max_length=20)
    totals: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    partitions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    storage: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    cpus_total: int = _count("cpus_total")
    cpus_free: int = _count("cpus_free")
    gpus_total: int = _count("gpus_total")
    gpus_free: int = _count("gpus_free")
    gpu_model: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    gpu_models: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))


def summed_columns(totals: CapacityTotals) -> dict[str, Any]:
    """The counts of ``totals`` that ``capacity_latest`` keeps as columns, by column name."""
    gpus = totals.gpus
    return {
        "cpus_total": totals.cpus_total,
        "cpus_free": totals.cpus_free,
        "gpus_total": sum(g.total for g in gpus.values()),
        "gpus_free": sum(g.free for g in gpus.values()),
        "gpu_model": next(iter(gpus)) if len(gpus) == 1 else None,
        "gpu_models": len(gpus),
    }


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
