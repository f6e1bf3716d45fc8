"""The local machine as one partition: CPUs, memory, NVIDIA GPUs.

What is free is what is not *allocated*: the machine's CPUs, memory and GPUs minus what
the jobs this agent runs hold (its executor keeps that account, ``Executor.allocated``).
Other programs on the machine allocate nothing: a machine busy with someone's compile
still lends its CPUs, as a Slurm node does for work outside Slurm. The one-minute load
average and the memory the OS calls available are reported beside it, as information
only (``load_1m``, ``memory_available_mb``). A site that wants to keep CPUs for its own
use lends less of them through its share (``cpu_share`` in the site policy).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil

from shared.schemas.capacity import CapacityTotals, GpuCapacity, PartitionCapacity
from site_agent.config import DiscoverySection
from site_agent.discovery.nvidia import discover_gpus
from site_agent.executors.base import Allocation


def gpus_left(found: list[GpuCapacity], held: dict[str | None, int]) -> list[GpuCapacity]:
    """Each discovered model's total minus the GPUs jobs hold; a job that named no model
    holds GPUs of the model with the most left."""
    free = {g.model: g.total - held.get(g.model, 0) for g in found}
    for _ in range(held.get(None, 0)):
        if not free:
            break
        model = max(sorted(free), key=lambda m: free[m])
        free[model] -= 1
    return [GpuCapacity(model=g.model, total=g.total, free=max(0, free[g.model])) for g in found]


class LocalDiscovery:
    name = "local"

    def __init__(self, cfg: DiscoverySection, allocated: Callable[[], Allocation] | None = None) -> None:
        self.cfg = cfg
        self.allocated = allocated or Allocation

    def partitions(self) -> list[PartitionCapacity]:
        cpus = psutil.cpu_count(logical=True) or os.cpu_count() or 1
        held = self.allocated()
        busy = min(cpus, held.cpus)
        mem = psutil.virtual_memory()
        total_mb = mem.total // 2**20
        return [
            PartitionCapacity(
                name=self.cfg.partition,
                cpus_total=cpus,
                cpus_allocated=busy,
                cpus_idle=cpus - busy,
                memory_total_mb=total_mb,
                memory_free_mb=max(0, total_mb - held.memory_mb),
                gpus=gpus_left(discover_gpus(self.cfg.gpu), held.gpus),
                nodes_total=1,
                nodes_available=1,
                jobs_running=held.jobs,
                load_1m=round(os.getloadavg()[0], 2),
                memory_available_mb=mem.available // 2**20,
            )
        ]

    def site_totals(self) -> CapacityTotals | None:
        return None  # partitions are disjoint: the hub sums them
