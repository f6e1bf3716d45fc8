"""Tables for datasets and their replicas."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"

    id: str = Field(primary_key=True, max_length=40)
    owner_site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    institution: str = Field(max_length=200, index=True)
    title: str = Field(max_length=500)
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    experiment_type: str = Field(max_length=40, index=True)
    visibility: str = Field(max_length=20, index=True)
    embargo_until: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    owner_group: str | None = Field(default=None, max_length=200)
    # Searchable copies of a few metadata fields; the whole metadata is in ``meta``.
    sample_name: str | None = Field(default=None, max_length=300, index=True)
    detector_model: str | None = Field(default=None, max_length=200, index=True)
    pixel_size_a: float | None = Field(default=None, index=True)
    meta: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    checksum_algorithm: str = Field(max_length=20)
    manifest_digest: str = Field(max_length=64)
    file_count: int
    total_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    source_datasets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source_job: str | None = Field(default=None, max_length=40)
    registered_by: str = Field(max_length=300)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Replica(SQLModel, table=True):
    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("dataset_id", "site_id"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: str = Field(
        sa_column=Column(String(40), ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    state: str = Field(max_length=20)
    location: str = Field(max_length=2000)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    state_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    audited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DatasetManifest(SQLModel, table=True):
    """A dataset's manifest, apart from its row: it lists every file (340k files: ~57 MB of
    JSON), and listings and dataset pages must not read it (on SQLite, a column after a large
    one in the same row is reached only by walking the large one's overflow pages)."""

    __tablename__ = "dataset_manifests"

    dataset_id: str = Field(sa_column=Column(String(40), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True))
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
