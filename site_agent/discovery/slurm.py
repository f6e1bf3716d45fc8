"""A Slurm cluster, read through its own CLI: ``scontrol show node -d -o`` for nodes, CPUs,
memory and GRES GPUs with their types, ``squeue`` for the local queue.

Elastic partitions (Slurm power saving, as AWS ParallelCluster configures it: ``State=CLOUD``
nodes that ``ResumeProgram`` starts when work needs them and ``SuspendProgram`` stops after
``SuspendTime`` idle) are reported twice over: what is up and free now, and what Slurm could
start (``*_bootable``), with ``ResumeTimeout`` as the longest a start may take. Powered-down
cloud nodes only appear in Slurm's output with ``PrivateData=cloud`` in slurm.conf; without
it, the agent cannot see what a partition could have (docs/cloud-sites.md)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from shared.schemas.capacity import CapacityTotals, GpuCapacity, GpuCount, PartitionCapacity
from site_agent.config import DiscoverySection
from site_agent.slurmcli import SlurmError, parse_fields, run_slurm

__all__ = ["SlurmDiscovery", "SlurmError"]

#: Node states in which a node takes no new work now (a node being started takes it once up).
_UNAVAILABLE = ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "POWER_DOWN",
                "MAINT", "FUTURE", "REBOOT")  # fmt: skip
#: Node states that keep a powered-down node from being started for work.
_BROKEN = ("DOWN", "DRAIN", "FAIL", "MAINT", "FUTURE", "REBOOT", "POWER_DOWN", "POWERING_DOWN")
_GRES_GPU = re.compile(r"gpu(?::([^:(,]+))?:(\d+)")
_TRES_GPU = re.compile(r"gres/gpu(?::([^=,]+))?=(\d+)")


@dataclass
class Node:
    name: str
    state: str
    partitions: list[str]
    cpus_total: int
    cpus_alloc: int
    memory_mb: int
    memory_alloc_mb: int
    gpus_total: dict[str, int] = field(default_factory=dict)
    gpus_alloc: dict[str, int] = field(default_factory=dict)

    @property
    def flags(self) -> set[str]:
        """'IDLE+CLOUD+POWERED_DOWN' -> {'IDLE', 'CLOUD', 'POWERED_DOWN'} (without sinfo's suffixes such as '*')."""
        return {f.rstrip("*~#!%$@^-") for f in self.state.upper().split("+")}

    @property
    def available(self) -> bool:
        return not any(s in self.state.upper() for s in _UNAVAILABLE) and not self.state.endswith("*")

    @property
    def cloud(self) -> bool:
        return "CLOUD" in self.flags

    @property
    def booting(self) -> bool:
        """Being started: POWERING_UP, or still POWERED_DOWN with a job already given to it."""
        flags = self.flags
        return "POWERING_UP" in flags or ("POWERED_DOWN" in flags and self.cpus_alloc > 0)

    @property
    def bootable(self) -> bool:
        """Powered down (or being started) and otherwise sound: Slurm starts it for work that needs it."""
        flags = self.flags
        return bool(flags & {"POWERED_DOWN", "POWERING_UP"}) and not any(f.startswith(_BROKEN) for f in flags)


def _gres(value: str, pattern: re.Pattern[str]) -> dict[str, int]:
    """GPU counts by type; an untyped entry only counts when no typed entry is given."""
    typed: Counter[str] = Counter()
    untyped = 0
    for m in pattern.finditer(value or ""):
        if m.group(1):
            typed[m.group(1).lower()] += int(m.group(2))
        else:
            untyped += int(m.group(2))
    if typed:
        return dict(typed)
    return {"gpu": untyped} if untyped else {}


def parse_nodes(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        if not line.strip().startswith("NodeName="):
            continue
        f = parse_fields(line)
        nodes.append(
            Node(
                name=f["NodeName"],
                state=f.get("State", "UNKNOWN"),
                partitions=[p for p in f.get("Partitions", "").split(",") if p],
                cpus_total=int(f.get("CPUTot", 0)),
                cpus_alloc=int(f.get("CPUAlloc", 0)),
                memory_mb=int(f.get("RealMemory", 0)),
                memory_alloc_mb=int(f.get("AllocMem", 0)),
                gpus_total=_gres(f.get("Gres", ""), _GRES_GPU),
                # GresUsed (from `-d`) always names GPUs in use; AllocTRES only does when
                # the cluster's AccountingStorageTRES tracks gres/gpu.
                gpus_alloc=_gres(f["GresUsed"], _GRES_GPU) if "GresUsed" in f else _gres(f.get("AllocTRES", ""), _TRES_GPU),
            )
        )
    return nodes


def parse_queue(text: str) -> tuple[Counter[str], Counter[str]]:
    """``squeue -h -o '%P|%T'`` -> (pending, running) jobs per partition."""
    pending: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for line in text.splitlines():
        parts, _, state = line.strip().partition("|")
        for part in parts.split(","):
            if not part:
                continue
            if state == "PENDING":
                pending[part] += 1
            elif state in ("RUNNING", "COMPLETING"):
                running[part] += 1
    return pending, running


def is_spot(partition: str, spot_partitions: list[str] | None) -> bool:
    """Spot capacity: the partitions the site's admin lists, or by default those named like
    GoToCloud's spot twins ('g5-vcpu48-gpu4-spot')."""
    if spot_partitions is not None:
        return partition in spot_partitions
    return partition.lower().endswith("-spot")


def summarize(
    nodes: list[Node],
    pending: Counter[str],
    running: Counter[str],
    only: list[str] | None,
    spot_partitions: list[str] | None = None,
    resume_timeout_s: dict[str, int] | None = None,
) -> list[PartitionCapacity]:
    """Per partition: totals over every node, free on nodes up now, and (elastic partitions)
    free on nodes Slurm would start. ``resume_timeout_s``: partition -> Slurm's ResumeTimeout."""
    by_part: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        for part in node.partitions:
            if only is None or part in only:
                by_part[part].append(node)
    out = []
    for part, members in sorted(by_part.items()):
        gpus_total: Counter[str] = Counter()
        gpus_free: Counter[str] = Counter()
        gpus_boot: Counter[str] = Counter()
        idle = alloc = mem_total = mem_free = boot = 0
        for n in members:
            alloc += n.cpus_alloc
            mem_total += n.memory_mb
            for model, count in n.gpus_total.items():
                gpus_total[model] += count
                if n.available:
                    gpus_free[model] += max(0, count - n.gpus_alloc.get(model, 0))
                elif n.bootable:
                    gpus_boot[model] += max(0, count - n.gpus_alloc.get(model, 0))
            if n.available:
                idle += max(0, n.cpus_total - n.cpus_alloc)
                mem_free += max(0, n.memory_mb - n.memory_alloc_mb)
            elif n.bootable:
                boot += max(0, n.cpus_total - n.cpus_alloc)
        elastic = any(n.cloud or n.bootable for n in members)  # power saving on static nodes starts them too
        out.append(
            PartitionCapacity(
                name=part.lower(),
                cpus_total=sum(n.cpus_total for n in members),
                cpus_allocated=alloc,
                cpus_idle=idle,
                memory_total_mb=mem_total,
                memory_free_mb=mem_free,
                gpus=[
                    GpuCapacity(model=m, total=t, free=gpus_free[m], bootable=gpus_boot[m]) for m, t in sorted(gpus_total.items())
                ],
                nodes_total=len(members),
                nodes_available=sum(1 for n in members if n.available),
                jobs_pending=pending[part],
                jobs_running=running[part],
                elastic=elastic,
                spot=is_spot(part, spot_partitions),
                nodes_bootable=sum(1 for n in members if n.bootable and not n.booting),
                nodes_booting=sum(1 for n in members if n.bootable and n.booting),
                cpus_bootable=boot,
                resume_timeout_s=(resume_timeout_s or {}).get(part) if elastic else None,
            )
        )
    return out


def node_totals(nodes: list[Node], pending: int) -> CapacityTotals:
    """Site-wide totals, each node once however many partitions it is in."""
    gpus: dict[str, GpuCount] = {}
    bootable: Counter[str] = Counter()
    for n in nodes:
        for model, count in n.gpus_total.items():
            g = gpus.setdefault(model, GpuCount())
            g.total += count
            if n.available:
                g.free += max(0, count - n.gpus_alloc.get(model, 0))
            elif n.bootable:
                bootable[model] += max(0, count - n.gpus_alloc.get(model, 0))
    return CapacityTotals(
        cpus_total=sum(n.cpus_total for n in nodes),
        cpus_free=sum(max(0, n.cpus_total - n.cpus_alloc) for n in nodes if n.available),
        cpus_bootable=sum(max(0, n.cpus_total - n.cpus_alloc) for n in nodes if n.bootable),
        memory_total_mb=sum(n.memory_mb for n in nodes),
        memory_free_mb=sum(max(0, n.memory_mb - n.memory_alloc_mb) for n in nodes if n.available),
        gpus=gpus,
        gpus_bootable={m: c for m, c in bootable.items() if c},
        jobs_pending=pending,
    )


class SlurmDiscovery:
    name = "slurm"

    def __init__(self, cfg: DiscoverySection) -> None:
        self.cfg = cfg
        self._totals: CapacityTotals | None = None

    def _run(self, *argv: str) -> str:
        return run_slurm(list(argv), self.cfg.slurm_bin_dir, self.cfg.slurm_conf, timeout=30).stdout

    def _resume_timeouts(self) -> dict[str, int]:
        """Partition -> ResumeTimeout (s): the partition's own, else the cluster's (default 60)."""
        config = re.search(r"^ResumeTimeout\s*=\s*(\d+)", self._run("scontrol", "show", "config"), re.M)
        default = int(config.group(1)) if config else 60
        out = {}
        for line in self._run("scontrol", "show", "partition", "-o").splitlines():
            f = parse_fields(line)
            if "PartitionName" in f:
                own = f.get("ResumeTimeout", "")
                out[f["PartitionName"]] = int(own) if own.isdigit() else default
        return out

    def partitions(self) -> list[PartitionCapacity]:
        nodes = parse_nodes(self._run("scontrol", "show", "node", "-d", "-o"))
        pending, running = parse_queue(self._run("squeue", "-h", "-o", "%P|%T"))
        timeouts = self._resume_timeouts() if any(n.cloud or n.bootable for n in nodes) else {}
        parts = summarize(nodes, pending, running, self.cfg.partitions, self.cfg.spot_partitions, timeouts)
        wanted = {p.name for p in parts}
        counted = [n for n in nodes if any(p.lower() in wanted for p in n.partitions)]
        queued = sum(c for part, c in pending.items() if part.lower() in wanted)
        self._totals = node_totals(counted, queued)
        return parts

    def site_totals(self) -> CapacityTotals | None:
        return self._totals
