"""The network view: what the whole mesh has and has free."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shared.schemas.capacity import CapacityTotals, GpuCount
from shared.schemas.sites import Reachability, SiteStatus


class SiteSummary(BaseModel):
    name: str
    display_name: str
    institution: str
    country: str
    status: SiteStatus
    reachability: Reachability
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None = Field(description="Seconds since the last heartbeat; null if never")
    capacity: CapacityTotals | None = Field(description="Latest reported capacity; null if never reported")
    runtimes: list[str] = Field(
        default_factory=list, description="Container runtimes the site's agent found, e.g. 'podman 4.3.1' (TES tasks)"
    )


class NetworkSummary(BaseModel):
    """Network-wide totals (computed in the database), and one page of per-site rows.

    The totals always cover the whole network; the filters (status, reachability,
    institution, q) and ``limit``/``offset`` only choose which sites are listed in
    ``sites``. ``limit=0`` is the summary form: totals only, whatever the network's size."""

    generated_at: datetime
    sites_total: int = Field(description="Sites registered in the network")
    sites_by_status: dict[str, int] = Field(description="Lifecycle status -> number of sites")
    sites_by_reachability: dict[str, int]
    cpus_total: int
    cpus_free: int
    gpus: dict[str, GpuCount] = Field(description="GPU model -> total/free across reachable active sites")
    sites_matching: int = Field(description="Sites matching the filters (all sites when there are none)")
    limit: int
    offset: int
    sites: list[SiteSummary] = Field(description="The page of sites matching the filters, by name")
