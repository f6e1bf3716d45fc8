"""The cost of a job's footprint on a partition, from the prices its site declares.

Pure functions over the broker's partition views, so the broker can price every site in a
pass without a query. Two ways to price a partition (shared.schemas.sites.PartitionCost):

- on premises, rates per CPU-hour and GPU-hour: a job pays for what it holds;
- in the cloud, a price per node-hour: a job pays for whole nodes, from the moment they
  start booting. Nodes of an elastic partition exist only while work needs them (as
  ParallelCluster runs Slurm), so each job is charged its nodes' start-up time too.

A partition without prices costs nothing. Which partition of a site an attempt ran on is
not reported by agents; the cheapest one that fits the job is assumed, for the estimate and
for the ledger alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.schemas.sites import PartitionCost


@dataclass(frozen=True)
class Priced:
    """A job's footprint priced on one partition."""

    partition: str
    per_hour: float
    startup_s: int
    spot: bool

    def cost(self, runtime_s: float) -> float:
        return self.per_hour * (max(runtime_s, 0.0) + self.startup_s) / 3600


def footprint_per_hour(
    cost: PartitionCost | None, spot: bool, cores_per_node: int, gpus_per_node: int, cpus: int, gpus: int
) -> tuple[float, int]:
    """(price per hour of ``cpus`` and ``gpus`` on such a partition, start-up seconds charged)."""
    if cost is None:
        return 0.0, 0
    if cost.on_demand_node_hour is None and cost.spot_node_hour is None:
        return cpus * (cost.cpu_hour or 0.0) + gpus * (cost.gpu_hour or 0.0), 0
    node_hour = cost.spot_node_hour if spot else cost.on_demand_node_hour
    assert node_hour is not None  # Partition's validator: spot needs spot_node_hour, on demand on_demand_node_hour
    nodes = max(math.ceil(cpus / max(cores_per_node, 1)), math.ceil(gpus / gpus_per_node) if gpus and gpus_per_node else 0, 1)
    return nodes * node_hour, cost.node_startup_s


def cheapest(partitions: Sequence[PartitionLike], cpus: int, gpus: int, gpu_models: set[str] | None) -> Priced | None:
    """The cheapest partition the footprint fits (GPU jobs: one of ``gpu_models``), or None."""
    best: Priced | None = None
    for p in partitions:
        if p.node_count * p.cores_per_node < cpus:
            continue
        if gpus and (p.gpu_model is None or p.node_count * p.gpus_per_node < gpus
                     or (gpu_models is not None and p.gpu_model not in gpu_models)):  # fmt: skip
            continue
        per_hour, startup = footprint_per_hour(p.cost, p.spot, p.cores_per_node, p.gpus_per_node, cpus, gpus)
        priced = Priced(p.name, per_hour, startup, p.spot)
        if best is None or (priced.cost(3600), priced.partition) < (best.cost(3600), best.partition):
            best = priced
    return best


class PartitionLike(Protocol):
    """What pricing reads of a partition (the broker's PartitionView and the registry's rows)."""

    name: str
    node_count: int
    cores_per_node: int
    gpu_model: str | None
    gpus_per_node: int
    spot: bool
    cost: PartitionCost | None
