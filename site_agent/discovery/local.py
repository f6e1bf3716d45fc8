"""The local machine as one partition: CPUs, memory, NVIDIA GPUs.

CPUs in use are estimated from the one-minute load average, the only machine-wide
measure of demand that a plain host has.
"""

from __future__ import annotations

import os

import psutil

from shared.schemas.capacity import CapacityTotals, PartitionCapacity
from site_agent.config import DiscoverySection
from site_agent.discovery.nvidia import discover_gpus


class LocalDiscovery:
    name = "local"

    def __init__(self, cfg: DiscoverySection) -> None:
        self.cfg = cfg

    def partitions(self) -> list[PartitionCapacity]:
        cpus = psutil.cpu_count(logical=True) or os.cpu_count() or 1
        busy = min(cpus, round(os.getloadavg()[0]))
        mem = psutil.virtual_memory()
        return [
            PartitionCapacity(
                name=self.cfg.partition,
                cpus_total=cpus,
                cpus_allocated=busy,
                cpus_idle=cpus - busy,
                memory_total_mb=mem.total // 2**20,
                memory_free_mb=mem.available // 2**20,
                gpus=discover_gpus(self.cfg.gpu),
                nodes_total=1,
                nodes_available=1,
            )
        ]

    def site_totals(self) -> CapacityTotals | None:
        return None  # partitions are disjoint: the hub sums them
