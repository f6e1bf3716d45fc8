"""The transfer table: one row per copy of a dataset from one site to another."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class Transfer(SQLModel, table=True):
    __tablename__ = "transfers"

    id: str = Field(primary_key=True, max_length=40)
    request_id: str | None = Field(
        default=None,
        sa_column=Column(String(40), ForeignKey("share_requests.id", ondelete="SET NULL"), nullable=True, index=True),
    )
    job_id: str | None = Field(default=None, max_length=40, index=True)
    requested_by: str = Field(max_length=300)
    dataset_id: str = Field(
        sa_column=Column(String(40), ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    source_site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    dest_site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    source_location: str = Field(max_length=2000)
    state: str = Field(default="QUEUED", max_length=20, index=True)
    attempt: int = 1
    max_attempts: int
    files_total: int
    bytes_total: int = Field(sa_column=Column(BigInteger, nullable=False))
    published_files: int = 0
    published_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    fetched_files: int = 0
    fetched_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    rate_bps: float = 0.0
    resent_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    access: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    republish: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    republish_counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resent_files: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    file_errors: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    exchange_cleaned: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_progress_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
