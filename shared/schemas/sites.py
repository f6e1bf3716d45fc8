"""The facility registry: sites, their partitions, software and storage."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, FiniteFloat, model_validator

from shared.schemas.common import Int64, Page, SafeStr, Slug, StrictModel


class SiteStatus(StrEnum):
    """Administrative lifecycle of a site, set by network admins."""

    PENDING = "pending"  # registered, no approved agent yet
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Reachability(StrEnum):
    """Whether the site's agent is heard from; derived from heartbeats."""

    UNKNOWN = "unknown"  # never heard from
    ONLINE = "online"
    UNREACHABLE = "unreachable"  # missed too many heartbeats


class Contact(StrictModel):
    name: SafeStr = Field(min_length=1, max_length=200)
    email: SafeStr = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: SafeStr | None = Field(default=None, max_length=100, description="e.g. 'facility manager'")


class PartitionCost(StrictModel):
    """What an hour of a partition costs, in the network's currency (the hub's ``currency``).

    On premises: an internal rate per CPU-hour and per GPU-hour (either may be left out: that
    resource is not charged). In the cloud: the instance type and its price per node-hour on
    demand and as spot; a node is paid for from the moment it starts booting, so
    ``node_startup_s`` is charged with every job that needs a fresh node. Prices change:
    ``as_of`` says when they were taken, ``source`` where from (e.g. a price list's URL)."""

    cpu_hour: FiniteFloat | None = Field(default=None, ge=0, le=1e6, description="Internal rate per CPU-hour")
    gpu_hour: FiniteFloat | None = Field(default=None, ge=0, le=1e6, description="Internal rate per GPU-hour")
    instance_type: SafeStr | None = Field(default=None, max_length=100, description="Cloud instance type, e.g. 'g5.12xlarge'")
    on_demand_node_hour: FiniteFloat | None = Field(default=None, ge=0, le=1e6, description="Price per node-hour on demand")
    spot_node_hour: FiniteFloat | None = Field(default=None, ge=0, le=1e6, description="Price per node-hour as spot")
    node_startup_s: Int64 = Field(default=0, ge=0, le=86_400, description="How long a fresh node takes to start")
    as_of: date = Field(description="When these prices were taken")
    source: SafeStr | None = Field(default=None, max_length=500, description="Where they were taken from")

    @model_validator(mode="after")
    def _one_kind(self) -> PartitionCost:
        rates = self.cpu_hour is not None or self.gpu_hour is not None
        nodes = self.on_demand_node_hour is not None or self.spot_node_hour is not None
        if rates and nodes:
            raise ValueError("give either rates per CPU-/GPU-hour (on premises) or prices per node-hour (cloud), not both")
        if not rates and not nodes:
            raise ValueError("give cpu_hour/gpu_hour rates or on_demand_node_hour/spot_node_hour prices")
        if nodes and not self.instance_type:
            raise ValueError("prices per node-hour need the instance_type they are for")
        return self


class Partition(StrictModel):
    """A homogeneous group of nodes offered by a site (a Slurm partition, a cloud queue)."""

    name: Slug
    cpu_model: SafeStr | None = Field(default=None, max_length=200)
    node_count: Int64 = Field(ge=0, le=100_000)
    cores_per_node: Int64 = Field(ge=1, le=4096)
    memory_gb_per_node: FiniteFloat = Field(ge=0, le=65_536)
    gpu_model: SafeStr | None = Field(default=None, max_length=100, description="e.g. 'a100'")
    gpus_per_node: Int64 = Field(default=0, ge=0, le=64)
    interconnect: SafeStr | None = Field(default=None, max_length=100, description="e.g. 'HDR InfiniBand'")
    spot: bool = Field(default=False, description="Cloud spot capacity: cheaper, and a node may be taken away mid-job")
    cost: PartitionCost | None = Field(default=None, description="What an hour here costs; none: nothing is charged")

    @model_validator(mode="after")
    def _gpu_model_with_gpus(self) -> Partition:
        if self.gpus_per_node and not self.gpu_model:
            raise ValueError("gpu_model is required when gpus_per_node > 0")
        if self.spot and (self.cost is None or self.cost.spot_node_hour is None):
            raise ValueError("a spot partition needs cost.spot_node_hour")
        on_demand_unpriced = (
            self.cost is not None and self.cost.spot_node_hour is not None and self.cost.on_demand_node_hour is None
        )
        if not self.spot and on_demand_unpriced:
            raise ValueError("an on-demand partition needs cost.on_demand_node_hour (or set spot = true)")
        return self


class Software(StrictModel):
    """A package a site offers to federated work."""

    name: SafeStr = Field(min_length=1, max_length=100, description="e.g. 'relion', 'cryosparc', 'motioncor2'")
    version: SafeStr = Field(min_length=1, max_length=50)
    cuda_arch: SafeStr | None = Field(default=None, max_length=20, description="CUDA compute capability, e.g. '8.6'")
    notes: SafeStr | None = Field(default=None, max_length=500)


class SoftwarePublic(Software):
    """A package as the registry lists it: declared by the site's admin, or measured by its agent."""

    model_config = ConfigDict(extra="ignore")

    source: str = Field(default="declared", description="'declared' (by the site's admin) or 'measured' (by its agent)")
    build: str | None = Field(default=None, description="measured: 'cpu' or 'cuda'")
    mpi: bool | None = Field(default=None, description="measured: an MPI build with a launcher was found")
    path: str | None = Field(default=None, description="measured: where the programs are at the site")
    measured_at: datetime | None = None


class StorageEndpoint(StrictModel):
    name: Slug
    kind: SafeStr = Field(default="posix", pattern=r"^(posix|s3)$")
    path: SafeStr = Field(min_length=1, max_length=1000, description="A directory, or s3://bucket/prefix")
    capacity_tb: FiniteFloat | None = Field(default=None, ge=0)


class SiteBase(StrictModel):
    institution: SafeStr = Field(min_length=1, max_length=200, description="Institution slug, e.g. 'kek'")
    display_name: SafeStr = Field(min_length=1, max_length=200)
    country: SafeStr = Field(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    location: SafeStr | None = Field(default=None, max_length=200, description="City or region")
    description: SafeStr | None = Field(default=None, max_length=5000)
    contacts: list[Contact] = Field(default_factory=list, max_length=20)
    partitions: list[Partition] = Field(default_factory=list, max_length=200)
    software: list[Software] = Field(default_factory=list, max_length=500)
    storage: list[StorageEndpoint] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> SiteBase:
        for kind, names in (
            ("partition", [p.name for p in self.partitions]),
            ("storage endpoint", [s.name for s in self.storage]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names: {', '.join(dupes)}")
        return self


class SiteCreate(SiteBase):
    name: Slug = Field(description="Short unique name of the site, e.g. 'kek-cryo'")


class SiteUpdate(StrictModel):
    """Fields to change; lists given here replace the site's lists whole."""

    display_name: SafeStr | None = Field(default=None, min_length=1, max_length=200)
    institution: SafeStr | None = Field(default=None, min_length=1, max_length=200)
    country: SafeStr | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    location: SafeStr | None = Field(default=None, max_length=200)
    description: SafeStr | None = Field(default=None, max_length=5000)
    contacts: list[Contact] | None = Field(default=None, max_length=20)
    partitions: list[Partition] | None = Field(default=None, max_length=200)
    software: list[Software] | None = Field(default=None, max_length=500)
    storage: list[StorageEndpoint] | None = Field(default=None, max_length=50)


class SitePublic(SiteBase):
    model_config = ConfigDict(extra="ignore")  # a response: readers tolerate a newer hub's fields

    name: str
    software: list[SoftwarePublic] = Field(default_factory=list)  # type: ignore[assignment]
    status: SiteStatus
    reachability: Reachability
    last_heartbeat_at: datetime | None
    heartbeat_interval_s: float | None
    agent_version: str | None
    created_at: datetime
    updated_at: datetime


SitePage = Page[SitePublic]


class TimeWindow(StrictModel):
    """A weekly window in the site's time zone, e.g. weeknights 19:00-07:00."""

    days: list[SafeStr] = Field(min_length=1, max_length=7, description="mon, tue, wed, thu, fri, sat, sun")
    start: SafeStr = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")
    end: SafeStr = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", description="HH:MM; before start means overnight")

    @model_validator(mode="after")
    def _days(self) -> TimeWindow:
        bad = [d for d in self.days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown days: {', '.join(bad)} (use {', '.join(WEEKDAYS)})")
        if self.start == self.end:
            raise ValueError("a window needs start != end")
        return self


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SitePolicy(StrictModel):
    """What a site lends to federated work. Defaults lend everything to everyone, always."""

    cpu_share: FiniteFloat = Field(default=1.0, ge=0, le=1, description="Share of the site's CPUs federated jobs may hold")
    gpu_share: FiniteFloat = Field(default=1.0, ge=0, le=1, description="Share of the site's GPUs federated jobs may hold")
    allowed_institutions: list[SafeStr] | None = Field(
        default=None, max_length=1000, description="Only these institutions; null: all"
    )
    allowed_kinds: list[SafeStr] | None = Field(default=None, max_length=100, description="Only these job kinds; null: all")
    max_walltime_s: Int64 | None = Field(default=None, ge=60, description="Longest walltime accepted")
    windows: list[TimeWindow] = Field(
        default_factory=list, max_length=100, description="When federated work may start; empty: always"
    )
    timezone: SafeStr = Field(default="UTC", description="IANA zone the windows are in, e.g. 'Asia/Tokyo'")

    @model_validator(mode="after")
    def _zone_and_kinds(self) -> SitePolicy:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if self.allowed_kinds is not None:
            from shared.schemas.jobs import JobKind

            known = {k.value for k in JobKind}
            bad = [k for k in self.allowed_kinds if k not in known]
            if bad:
                raise ValueError(f"unknown job kinds: {', '.join(bad)}")
        return self
