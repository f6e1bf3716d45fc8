"""Capacity declared in site.toml, for queues that scale from zero.

An AWS ParallelCluster queue (or any cloud queue) has no nodes until work arrives, so
there is nothing to measure: what the site can lend is its scaling limit. This backend
reports each declared partition at that limit, all of it idle. It measures nothing; use
``slurm`` wherever the scheduler can be asked.
"""

from __future__ import annotations

from shared.schemas.capacity import CapacityTotals, GpuCapacity, PartitionCapacity
from site_agent.config import DiscoverySection


class DeclaredDiscovery:
    name = "declared"

    def __init__(self, cfg: DiscoverySection) -> None:
        if not cfg.declared:
            raise ValueError("the declared backend needs [[discovery.declared]] partitions in site.toml")
        self.cfg = cfg

    def partitions(self) -> list[PartitionCapacity]:
        out = []
        for p in self.cfg.declared:
            cpus = p.max_nodes * p.cpus_per_node
            mem = int(p.max_nodes * p.memory_gb_per_node * 1024)
            gpus = (
                [GpuCapacity(model=p.gpu_model, total=p.max_nodes * p.gpus_per_node, free=p.max_nodes * p.gpus_per_node)]
                if p.gpu_model and p.gpus_per_node
                else []
            )
            out.append(
                PartitionCapacity(
                    name=p.name,
                    cpus_total=cpus,
                    cpus_allocated=0,
                    cpus_idle=cpus,
                    memory_total_mb=mem,
                    memory_free_mb=mem,
                    gpus=gpus,
                    nodes_total=p.max_nodes,
                    nodes_available=p.max_nodes,
                )
            )
        return out

    def site_totals(self) -> CapacityTotals | None:
        return None  # partitions are disjoint: the hub sums them
