"""Capacity snapshots: what an agent reports in each heartbeat."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, FiniteFloat, model_validator

from shared.schemas.common import Int64, SafeStr, Slug
from shared.schemas.software import MeasuredSoftware


class GpuCapacity(BaseModel):
    model: SafeStr = Field(min_length=1, max_length=100, description="GPU model, e.g. 'a100', lower case")
    total: Int64 = Field(ge=0, le=100_000)
    free: Int64 = Field(ge=0, le=100_000, description="On nodes up now and not allocated")
    bootable: Int64 = Field(
        default=0, ge=0, le=100_000, description="On nodes that are powered down (or starting): free after a node start-up"
    )

    @model_validator(mode="after")
    def _free_within_total(self) -> GpuCapacity:
        if self.free + self.bootable > self.total:
            raise ValueError(f"gpu {self.model}: free + bootable ({self.free} + {self.bootable}) exceeds total ({self.total})")
        return self


class PartitionCapacity(BaseModel):
    """One partition as the agent sees it now. An elastic partition (Slurm power saving, as
    AWS ParallelCluster runs it) has nodes that exist only while work needs them: its totals
    count every node it may have, ``cpus_idle``/``gpus[].free`` what is up and free now, and
    the ``*_bootable`` fields what Slurm would start (``ResumeProgram``) for new work."""

    name: Slug
    cpus_total: Int64 = Field(ge=0, le=10_000_000, description="Every node's CPUs, powered down ones included")
    cpus_allocated: Int64 = Field(ge=0, le=10_000_000)
    cpus_idle: Int64 = Field(ge=0, le=10_000_000, description="Free on nodes up and accepting work now")
    memory_total_mb: Int64 = Field(ge=0)
    memory_free_mb: Int64 = Field(ge=0)
    gpus: list[GpuCapacity] = Field(default_factory=list, max_length=64)
    nodes_total: Int64 = Field(default=1, ge=0)
    nodes_available: Int64 = Field(default=1, ge=0, description="Nodes up and accepting work")
    jobs_pending: Int64 = Field(default=0, ge=0, description="Jobs waiting in the local queue")
    jobs_running: Int64 = Field(default=0, ge=0)
    elastic: bool = Field(
        default=False, description="Nodes exist only while work needs them (Slurm State=CLOUD nodes with power saving)"
    )
    spot: bool = Field(default=False, description="Spot capacity: cheaper, and a node may be taken away mid-job")
    nodes_bootable: Int64 = Field(default=0, ge=0, description="elastic: powered-down nodes Slurm starts when work needs them")
    nodes_booting: Int64 = Field(default=0, ge=0, description="elastic: nodes being started now")
    cpus_bootable: Int64 = Field(
        default=0, ge=0, le=10_000_000, description="elastic: free CPUs on powered-down or starting nodes"
    )
    resume_timeout_s: Int64 | None = Field(
        default=None, ge=0, le=86_400, description="elastic: Slurm's ResumeTimeout, the longest a node start may take"
    )
    load_1m: float | None = Field(
        default=None,
        ge=0,
        le=10_000_000,
        allow_inf_nan=False,
        description="Information only: the one-minute load average (local backend). Free capacity is "
        "cpus_idle, what is not allocated to jobs; load from other programs is never counted as allocated",
    )
    memory_available_mb: Int64 | None = Field(
        default=None,
        ge=0,
        description="Information only: memory the operating system reports available (local backend); "
        "memory_free_mb is the total minus what jobs hold",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PartitionCapacity:
        if self.cpus_allocated + self.cpus_idle + self.cpus_bootable > self.cpus_total:
            raise ValueError(
                f"partition {self.name}: cpus_allocated + cpus_idle + cpus_bootable ({self.cpus_allocated} + "
                f"{self.cpus_idle} + {self.cpus_bootable}) exceeds cpus_total ({self.cpus_total})"
            )
        if self.nodes_available + self.nodes_bootable > self.nodes_total:
            raise ValueError(f"partition {self.name}: nodes_available + nodes_bootable exceeds nodes_total")
        booted = ("nodes_bootable", "nodes_booting", "cpus_bootable", "resume_timeout_s")
        if not self.elastic and (any(getattr(self, f) for f in booted) or any(g.bootable for g in self.gpus)):
            named = [f for f in booted if getattr(self, f)] or ["gpus[].bootable"]
            raise ValueError(f"partition {self.name}: {', '.join(named)} given, but the partition is not elastic")
        if self.memory_free_mb > self.memory_total_mb:
            raise ValueError(f"partition {self.name}: memory_free_mb exceeds memory_total_mb")
        models = [g.model for g in self.gpus]
        if len(set(models)) != len(models):
            raise ValueError(f"partition {self.name}: a GPU model is listed twice")
        return self


class StorageCapacity(BaseModel):
    name: Slug
    path: SafeStr = Field(max_length=1000)
    total_bytes: Int64 = Field(ge=0)
    free_bytes: Int64 = Field(ge=0)


class GpuCount(BaseModel):
    total: Int64 = Field(default=0, ge=0)
    free: Int64 = Field(default=0, ge=0)


class CapacityTotals(BaseModel):
    """Site-wide CPU and GPU counts, each node counted once."""

    cpus_total: Int64 = Field(default=0, ge=0)
    cpus_free: Int64 = Field(default=0, ge=0)
    cpus_bootable: Int64 = Field(default=0, ge=0, description="Free after a node start-up (elastic partitions)")
    memory_total_mb: Int64 = Field(default=0, ge=0)
    memory_free_mb: Int64 = Field(default=0, ge=0)
    gpus: dict[SafeStr, GpuCount] = Field(default_factory=dict, max_length=200, description="GPU model -> counts")
    gpus_bootable: dict[SafeStr, Int64] = Field(
        default_factory=dict, max_length=200, description="GPU model -> free after a node start-up (elastic partitions)"
    )
    jobs_pending: Int64 = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> CapacityTotals:
        if self.cpus_free + self.cpus_bootable > self.cpus_total:
            raise ValueError(f"totals: cpus_free {'+ cpus_bootable ' if self.cpus_bootable else ''}exceeds cpus_total")
        for model, c in self.gpus.items():
            if c.free + self.gpus_bootable.get(model, 0) > c.total:
                raise ValueError(f"totals: free + bootable {model} GPUs exceed the total")
        if unknown := sorted(set(self.gpus_bootable) - set(self.gpus)):
            raise ValueError(f"totals: gpus_bootable names models not in gpus: {', '.join(unknown)}")
        return self


class Heartbeat(BaseModel):
    """The body of ``POST /api/v1/sites/{site}/heartbeat``."""

    agent_version: SafeStr = Field(min_length=1, max_length=50)
    interval_s: FiniteFloat = Field(gt=0, le=3600, description="How often this agent sends heartbeats")
    sampled_at: datetime = Field(description="When the agent took the snapshot (UTC)")
    backend: SafeStr = Field(min_length=1, max_length=20, description="Discovery backend: 'local' or 'slurm'")
    partitions: list[PartitionCapacity] = Field(min_length=1, max_length=200)
    storage: list[StorageCapacity] = Field(default_factory=list, max_length=50)
    attempts: list[SafeStr] = Field(
        default_factory=list, max_length=10_000, description="Attempts this agent holds; their leases are renewed"
    )
    totals: CapacityTotals | None = Field(
        default=None,
        description="Site-wide totals with each node counted once, for schedulers whose partitions "
        "share nodes (Slurm); default: the sum over partitions",
    )
    software: list[MeasuredSoftware] | None = Field(
        default=None,
        max_length=200,
        description="Software the agent measured (RELION builds found on PATH or in its configured dirs, container "
        "runtimes, and the images the site runs as 'image:<pattern>'). "
        "Sent when it changes; None: unchanged since the last heartbeat the hub acknowledged",
    )

    @model_validator(mode="after")
    def _unique_partitions(self) -> Heartbeat:
        names = [p.name for p in self.partitions]
        if len(set(names)) != len(names):
            raise ValueError("a partition is listed twice")
        return self


class HeartbeatAck(BaseModel):
    site: str
    received_at: datetime
    next_in_s: float = Field(description="When the hub expects the next heartbeat")


class SiteCapacity(BaseModel):
    """The latest snapshot of one site, as the hub keeps it."""

    site: str
    received_at: datetime
    sampled_at: datetime
    agent_version: str
    backend: str
    totals: CapacityTotals
    partitions: list[PartitionCapacity]
    storage: list[StorageCapacity]


class CapacityPoint(BaseModel):
    """One downsampled bucket of capacity history."""

    bucket_start: datetime
    samples: int
    cpus_total: int
    cpus_free_avg: float
    cpus_free_min: int
    gpus: dict[str, GpuHistory]


class GpuHistory(BaseModel):
    total: int
    free_avg: float
    free_min: int


CapacityPoint.model_rebuild()


class CapacityHistory(BaseModel):
    site: str
    bucket_s: int
    points: list[CapacityPoint]
