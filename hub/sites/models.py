"""Tables of the facility registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


def _site_fk() -> Any:
    return Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, index=True)


class Site(SQLModel, table=True):
    __tablename__ = "sites"
    __table_args__ = (
        # SQLite only: the network summary's reads (hub/network/queries.py), the counts and
        # version by status and reachability and the active online sites, from this index
        # alone instead of the wide rows. PostgreSQL's summary scans the table without it.
        Index("ix_sites_summary", "status", "reachability", "updated_at", "last_heartbeat_at", "id").ddl_if(dialect="sqlite"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=63)
    institution: str = Field(index=True, max_length=200)
    display_name: str = Field(max_length=200)
    country: str = Field(max_length=2, index=True)
    location: str | None = Field(default=None, max_length=200)
    description: str | None = None
    contacts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", index=True, max_length=20)
    reachability: str = Field(default="unknown", max_length=20)
    last_heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_interval_s: float | None = None
    # When the site becomes unreachable unless another heartbeat arrives: each heartbeat sets
    # it, so the sweep finds the silent sites with one indexed comparison.
    reachable_until: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    agent_version: str | None = Field(default=None, max_length=50)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PartitionRow(SQLModel, table=True):
    __tablename__ = "partitions"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=_site_fk())
    name: str = Field(max_length=63)
    cpu_model: str | None = Field(default=None, max_length=200)
    node_count: int
    cores_per_node: int
    memory_gb_per_node: float
    gpu_model: str | None = Field(default=None, max_length=100, index=True)
    gpus_per_node: int = 0
    interconnect: str | None = Field(default=None, max_length=100)
    spot: bool = False
    cost: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class SoftwareRow(SQLModel, table=True):
    """A package at a site: declared by its admin, or measured by its agent (``source``).

    A measured GPU build has one row per CUDA architecture it was compiled for."""

    __tablename__ = "site_software"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=_site_fk())
    name: str = Field(max_length=100, index=True)
    version: str = Field(max_length=50)
    cuda_arch: str | None = Field(default=None, max_length=20)
    notes: str | None = Field(default=None, max_length=500)
    source: str = Field(default="declared", max_length=10, sa_column_kwargs={"server_default": "declared"})
    build: str | None = Field(default=None, max_length=20)
    mpi: bool | None = None
    path: str | None = Field(default=None, max_length=1000)
    measured_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StorageRow(SQLModel, table=True):
    __tablename__ = "storage_endpoints"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(sa_column=_site_fk())
    name: str = Field(max_length=63)
    kind: str = Field(max_length=10)
    path: str = Field(max_length=1000)
    capacity_tb: float | None = None


class RegistryChanges(SQLModel, table=True):
    """One row: a counter raised by every transaction that writes what the broker's site
    views read from the registry, so a hub process can tell at the cost of one row that its
    kept views are current (hub/broker/changes.py)."""

    __tablename__ = "registry_changes"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
