"""Tables for jobs, their attempts, placement decisions, the usage ledger, site policies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_jobs_state_priority", "state", "priority", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    owner: str = Field(max_length=300, index=True, description="Principal label of the submitter")
    institution: str = Field(max_length=200, index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default="QUEUED", max_length=20)
    site_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("sites.id", ondelete="SET NULL"), nullable=True, index=True)
    )
    attempt: int = 0
    priority: int = 0
    idempotency_key: str | None = Field(default=None, max_length=200)
    cancel_requested: bool = False
    state_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    exit_code: int | None = None
    stdout_tail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    stderr_tail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Attempt(SQLModel, table=True):
    """One try of a job at one site. States: offered -> claimed -> (ended | lost);
    offered -> (expired | refused | withdrawn)."""

    __tablename__ = "attempts"
    # By job: the unique (job_id, number) index (no index of job_id alone: migration 0024).
    __table_args__ = (UniqueConstraint("job_id", "number"), Index("ix_attempts_site_state", "site_id", "state"))

    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False))
    number: int
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False))
    state: str = Field(default="offered", max_length=20)
    tes_state: str | None = Field(default=None, max_length=20, description="Last state the agent reported")
    cpus: int = 1
    gpus: int = 0
    gpu_model: str | None = Field(default=None, max_length=100)
    partition: str | None = Field(default=None, max_length=63, description="The partition the broker chose (sbatch -p)")
    node_started: bool | None = Field(
        default=None, description="The agent says a node was started for it (a powered-down cloud node); None: not said"
    )
    offered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_seq: int = 0
    local_id: str | None = Field(default=None, max_length=100)
    exit_code: int | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class PlacementRecord(SQLModel, table=True):
    __tablename__ = "placements"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True))
    attempt: int
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    outcome: str = Field(max_length=20)
    site: str | None = Field(default=None, max_length=63)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    verdicts: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))


class UsageEntry(SQLModel, table=True):
    """The ledger: one row per attempt that ran, written when it ends."""

    __tablename__ = "usage"

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: str = Field(max_length=40, unique=True)
    job_id: str = Field(max_length=40, index=True)
    site: str = Field(max_length=63, index=True)
    institution: str = Field(max_length=200, index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime = Field(sa_type=UTCDateTime, index=True)
    wall_s: float
    cpus: int
    gpus: int
    gpu_model: str | None = Field(default=None, max_length=100)
    final_state: str = Field(max_length=20)
    cost: float | None = Field(default=None, description="In the network's currency; null in rows from before prices")


class SitePolicyRow(SQLModel, table=True):
    """What a site lends to the network."""

    __tablename__ = "site_policies"

    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True))
    cpu_share: float = 1.0
    gpu_share: float = 1.0
    allowed_institutions: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    allowed_kinds: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    max_walltime_s: int | None = None
    windows: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    timezone: str = Field(default="UTC", max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
