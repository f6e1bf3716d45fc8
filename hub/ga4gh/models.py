"""Tables for TES tasks: what the client sent that a job does not keep, and the agent's logs.

The job (``jobs``) is the task: state, placement, attempts and usage live there. These rows
keep the TES-only facts beside it, one per job made through TES."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class TesTaskRow(SQLModel, table=True):
    __tablename__ = "tes_tasks"

    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True))
    name: str | None = Field(default=None, max_length=200, index=True)
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    task: dict[str, Any] = Field(
        sa_column=Column(JSON, nullable=False), description="inputs, outputs, resources, executors, volumes as sent"
    )
    warnings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True), description="TesResult of the last attempt"
    )


class TesTagRow(SQLModel, table=True):
    """One tag of a task, so ``tag_key``/``tag_value`` filters are queries, not scans."""

    __tablename__ = "tes_tags"
    __table_args__ = (Index("ix_tes_tags_key_value", "key", "value"),)

    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    value: str = Field(sa_column=Column(String(1000), nullable=False))


class PresignRow(SQLModel, table=True):
    """A DRS client waiting for a site's agent to sign a GET URL (hub.ga4gh.presign). Rows
    live for one access call: the call deletes its row when answered or given up."""

    __tablename__ = "drs_presign_requests"

    id: str = Field(primary_key=True, max_length=40)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    url: str = Field(max_length=2100, description="s3://bucket/key")
    ttl_s: int
    state: str = Field(default="pending", max_length=20, description="pending, signed or refused")
    signed_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
