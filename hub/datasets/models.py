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
    owner: str | None = Field(default=None, max_length=300, description="A job's output: the job's submitter")
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


#: A manifest path: on PostgreSQL in the "C" collation (UTF-8 byte order, which is code point
#: order), so the primary key's index gives files in the order the manifest digest is taken in.
#: SQLite compares text bytewise already.
ManifestPath = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class DatasetFile(SQLModel, table=True):
    """One file of a dataset's manifest. A manifest lives in rows, not one blob, so it can be
    written a page at a time and read a page at a time; listings and dataset pages never
    touch this table."""

    __tablename__ = "dataset_files"

    dataset_id: str = Field(sa_column=Column(String(40), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True))
    path: str = Field(sa_column=Column(ManifestPath, primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    checksum: str = Field(max_length=200)


class DatasetUpload(SQLModel, table=True):
    """A paged registration under way: the dataset's description, waiting for its files.
    It is no dataset yet: nothing lists it; completing it makes the dataset."""

    __tablename__ = "dataset_uploads"

    id: str = Field(primary_key=True, max_length=40)
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True))
    client_id: str = Field(max_length=300, description="The agent that started it; only it may add to it")
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # the DatasetUploadCreate
    location: str = Field(max_length=2000)
    algorithm: str = Field(max_length=20)
    file_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    total_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_files: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    received_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    next_page: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DatasetUploadFile(SQLModel, table=True):
    """A file received for an upload, with the page it came in (to recognise a page sent again)."""

    __tablename__ = "dataset_upload_files"

    upload_id: str = Field(sa_column=Column(String(40), ForeignKey("dataset_uploads.id", ondelete="CASCADE"), primary_key=True))
    path: str = Field(sa_column=Column(ManifestPath, primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    checksum: str = Field(max_length=200)
    page: int = Field(sa_column=Column(BigInteger, nullable=False))
