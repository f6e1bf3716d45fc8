"""The network and the month of work the placement simulation replays (bench/placement_sim.py).

Everything here is fixed by a seed before any policy runs, so every policy sees the same
jobs, datasets, hidden site speeds and link rates. The numbers are assumptions unless a
comment gives a source; they are meant to be plausible, not fitted to any one centre:

- Sites: eight, of different sizes. Five hold microscopes (KEK 2, Osaka 2, Tokyo 2, Tohoku 1,
  RIKEN 1) and submit work; two university HPC centres are CPU-only and submit none; KEK's
  ParallelCluster site in AWS is elastic (nodes exist only while a job runs, start-up 10 min).
  Cloud prices: AWS on-demand us-east-1 g5.12xlarge $5.672/h and c6i.16xlarge $2.72/h (AWS
  price list, 2026); spot prices are assumptions (~40 % of on demand). On-premises rates per
  CPU-/GPU-hour are assumptions (internal cost-recovery rates of the order universities charge).
- Sessions: each microscope yields a session every 36 h on average (Poisson arrivals; a
  Krios runs 24-48 h sessions). A session's movies are 0.1-5 TB (log-uniform), held at the
  microscope's site, as the issue states.
- Bursts: after a session, its pipeline's jobs arrive over the next days (no dependencies
  between them are modelled): motion correction (CPU, RELION's own implementation) and CTF
  within 2 h; 1-3 2D classifications within a day; 1-2 3D classifications within 3 days;
  one refinement within 5 days. Particles (100 k-2 M, log-uniform), box sizes, class counts
  and GPUs per job are assumptions shaped on typical EMPIAR entries, not fitted to a
  published distribution (none we know of gives job-size distributions).
- Truth: a run takes the model's prior (hub/estimates/model.py) x the site's hidden speed
  factor (log-normal, sigma 0.35) x run-to-run noise (log-normal, sigma 0.25), capped at the
  job's walltime. Links between sites move data at a hidden rate (log-normal around
  250 MB/s; 150 MB/s to and from the cloud) after a 5 min set-up (approval, publishing).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date

from hub.broker.rules import PartitionNow, PartitionView, SiteView
from hub.estimates.model import prior_seconds
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import PartitionCost, SitePolicy

DAY = 86_400.0
HOUR = 3_600.0
AS_OF = date(2026, 11, 1)
AWS = "https://aws.amazon.com/ec2/pricing/on-demand/ (us-east-1); spot: assumption"


def _rates(cpu: float, gpu: float | None = None) -> PartitionCost:
    return PartitionCost(cpu_hour=cpu, gpu_hour=gpu, as_of=AS_OF, source="assumption: internal rate")


def _cloud(instance: str, on_demand: float, spot: float) -> PartitionCost:
    return PartitionCost(instance_type=instance, on_demand_node_hour=on_demand, spot_node_hour=spot,
                         node_startup_s=600, as_of=AS_OF, source=AWS)  # fmt: skip


@dataclass(frozen=True)
class SiteSpec:
    name: str
    institution: str
    microscopes: int
    partitions: list[PartitionView]


def sites() -> list[SiteSpec]:
    """The eight sites: (name, institution, microscopes, partitions)."""

    def part(name: str, nodes: int, cores: int, gpu: str | None = None, gpus: int = 0, cost: PartitionCost | None = None,
             spot: bool = False) -> PartitionView:  # fmt: skip
        return PartitionView(name, nodes, cores, 512.0, gpu, gpus, spot, cost)

    return [
        SiteSpec("kek-cryo", "kek", 2, [part("gpu", 4, 48, "v100", 4, _rates(0.02, 0.4))]),
        SiteSpec("osaka-gpu", "osaka", 2, [part("gpu", 8, 64, "a100", 4, _rates(0.02, 0.6))]),
        SiteSpec(
            "utokyo-hpc", "utokyo", 2, [part("gpu", 2, 64, "h100", 8, _rates(0.02, 1.0)), part("cpu", 16, 64, cost=_rates(0.02))]
        ),
        SiteSpec("kyoto-cpu", "kyoto", 0, [part("cpu", 24, 64, cost=_rates(0.015))]),
        SiteSpec("tohoku-lab", "tohoku", 1, [part("gpu", 2, 32, "rtx-3090", 4, _rates(0.02, 0.2))]),
        SiteSpec("nagoya-cpu", "nagoya", 0, [part("cpu", 8, 48, cost=_rates(0.015))]),
        SiteSpec(
            "riken-mix", "riken", 1, [part("gpu", 4, 64, "a40", 4, _rates(0.02, 0.5)), part("cpu", 12, 128, cost=_rates(0.02))]
        ),
        SiteSpec(
            "kek-aws",
            "kek",
            0,
            [
                part("g5-vcpu48-gpu4", 5, 48, "a10g", 4, _cloud("g5.12xlarge", 5.672, 2.27)),
                part("g5-vcpu48-gpu4-spot", 5, 48, "a10g", 4, _cloud("g5.12xlarge", 5.672, 2.27), spot=True),
                part("c6i-vcpu64", 5, 64, cost=_cloud("c6i.16xlarge", 2.72, 1.09)),
                part("c6i-vcpu64-spot", 5, 64, cost=_cloud("c6i.16xlarge", 2.72, 1.09), spot=True),
            ],
        ),
    ]


def is_cloud(site: SiteSpec) -> bool:
    return any(p.cost is not None and p.cost.node_startup_s > 0 for p in site.partitions)


def nodes_for(p: PartitionView, cpus: int, gpus: int) -> int:
    """Whole nodes a job holds on a cloud partition (as it is priced: hub/costs/pricing.py)."""
    return max(math.ceil(cpus / p.cores_per_node), math.ceil(gpus / p.gpus_per_node) if gpus else 0, 1)


Held = dict[str, tuple[int, int, int]]  # partition -> (CPUs, GPUs, nodes) the simulated work holds there


def report(s: SiteSpec, held: Held) -> dict[str, PartitionNow]:
    """What the site's agent would report of each partition (hub/broker/views.py ``_partition_now``):
    on premises, the CPUs and GPUs not held; on a cloud partition, nothing free on nodes up (each
    job holds its whole nodes, as it pays for them) and the rest of its maximum node count as
    powered-down nodes that can be started, with the partition's start-up time."""
    out = {}
    for p in s.partitions:
        cpus, gpus, nodes = held.get(p.name, (0, 0, 0))
        model = p.gpu_model
        if p.cost is not None and p.cost.node_startup_s > 0:
            left = p.node_count - nodes
            out[p.name] = PartitionNow(
                cpus_bootable=left * p.cores_per_node, gpus_free=dict.fromkeys([model] if model else [], 0),
                gpus_bootable={model: left * p.gpus_per_node} if model else {}, boot_s=p.cost.node_startup_s,
            )  # fmt: skip
        else:
            gpus_free = {model: p.node_count * p.gpus_per_node - gpus} if model else {}
            out[p.name] = PartitionNow(cpus_free=p.node_count * p.cores_per_node - cpus, gpus_free=gpus_free)
    return out


def view(i: int, s: SiteSpec, lend: float = 1.0) -> SiteView:
    """A fresh broker view of the site: everything free, reported, online, lending to all. On-premises
    sites lend ``lend`` of their CPUs and GPUs (their own users, not simulated, hold the rest); a
    cloud site's capacity is all on powered-down nodes, so every job there waits for a start-up."""
    share = 1.0 if is_cloud(s) else lend
    v = SiteView(id=i + 1, name=s.name, institution=s.institution, country="JP", status="active", reachability="online",
                 partitions=list(s.partitions), software=[("relion", "4.1", None)],
                 policy=SitePolicy(cpu_share=share, gpu_share=share), has_snapshot=True)  # fmt: skip
    v.cpus_total = v.cpus_free = sum(p.node_count * p.cores_per_node for p in s.partitions)
    for p in s.partitions:
        if p.gpu_model:
            v.gpus_total[p.gpu_model] = v.gpus_total.get(p.gpu_model, 0) + p.node_count * p.gpus_per_node
    v.gpus_free = dict(v.gpus_total)
    v.part_now = report(s, {})
    if is_cloud(s):  # elastic: every node is powered down until a job starts it (and free goes below zero)
        v.cpus_bootable, v.cpus_free = v.cpus_free, 0
        v.gpus_bootable, v.gpus_free = v.gpus_free, dict.fromkeys(v.gpus_free, 0)
    return v


@dataclass
class SimJob:
    id: int
    submit: float  # seconds from the start of the month
    institution: str
    spec: JobSpec


@dataclass
class Scenario:
    sites: list[SiteSpec]
    jobs: list[SimJob]
    dataset_bytes: dict[str, int]
    home: dict[str, int]  # dataset -> index of the site that holds it
    speed: dict[str, float]  # site -> hidden factor on run times (>1: slower than the prior says)
    link_bps: dict[tuple[int, int], float]  # (source index, destination index) -> true bytes/s
    noise: dict[int, float] = field(default_factory=dict)  # job id -> run-to-run factor
    lend: float = 1.0  # share of on-premises CPUs and GPUs lent to the simulated work


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _round_walltime(seconds: float) -> int:
    """Users ask for round walltimes: the next of 2, 4, 8, 12, 24, 48, 72, 120, 168 h."""
    for h in (2, 4, 8, 12, 24, 48, 72, 120, 168):
        if seconds <= h * HOUR:
            return int(h * HOUR)
    return int(168 * HOUR)


def _relion(kind: str, name: str, particles: int, box: int, gpus: int, params: dict[str, int], dataset: str) -> JobSpec:
    spec = JobSpec.model_validate({
        "name": name, "kind": kind, "parameters": params, "inputs": [{"dataset": dataset}],
        "workload": {"particles": particles, "box_px": box},
        "resources": {"cpus": 8 * gpus, "gpus": gpus, "memory_gb": 32 * gpus},
    })  # fmt: skip
    # The walltime a user would ask for: four times the prior on V100s, rounded up.
    walltime = _round_walltime(4 * prior_seconds(spec, "v100")[0])
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"walltime_s": walltime})})


def _cpu_job(kind: str, name: str, cpus: int, hours: float, dataset: str) -> JobSpec:
    """Kinds without a size model: the prior is half the walltime (priors.toml), so ask for twice the expected time."""
    resources = {"cpus": cpus, "memory_gb": 64, "walltime_s": _round_walltime(2 * hours * HOUR)}
    return JobSpec.model_validate({"name": name, "kind": kind, "inputs": [{"dataset": dataset}], "resources": resources})


def build(seed: int, days: float = 30.0, session_every_h: float = 36.0, lend: float = 1.0) -> Scenario:
    rng = random.Random(seed)
    ss = sites()
    speed = {s.name: math.exp(rng.gauss(0.0, 0.35)) for s in ss}
    link: dict[tuple[int, int], float] = {}
    for a, sa in enumerate(ss):
        for b, sb in enumerate(ss):
            if a != b:
                median = 150e6 if is_cloud(sa) or is_cloud(sb) else 250e6
                link[(a, b)] = median * math.exp(rng.gauss(0.0, 0.5))
    jobs: list[SimJob] = []
    sizes: dict[str, int] = {}
    home: dict[str, int] = {}
    sessions = []
    for i, s in enumerate(ss):
        for m in range(s.microscopes):
            t = rng.expovariate(1 / (session_every_h * HOUR))
            while t < days * DAY:
                sessions.append((t, i, m))
                t += rng.expovariate(1 / (session_every_h * HOUR))
    sessions.sort()

    def add(at: float, inst: str, spec: JobSpec) -> None:
        jobs.append(SimJob(0, at, inst, spec))

    for n, (t0, i, _) in enumerate(sessions):
        inst = ss[i].institution
        tb = _loguniform(rng, 0.1, 5.0)
        movies, mics, parts = f"s{n}-movies", f"s{n}-micrographs", f"s{n}-particles"
        particles = int(_loguniform(rng, 100e3, 2e6))
        box = rng.choice([192, 256, 256, 320, 360, 384, 448])
        sizes[movies] = int(tb * 1e12)
        sizes[mics] = int(tb * 1e12 / 20)  # motion-corrected sums: ~1/20 of the movies (assumption)
        sizes[parts] = particles * box * box * 4  # float32 images
        for d in (movies, mics, parts):
            home[d] = i
        # Motion correction: ~6 h per TB on 32 cores (assumption); CTF: ~1 h per TB of movies' sums.
        add(t0 + rng.uniform(0, 2) * HOUR, inst, _cpu_job("relion.motioncorr", f"s{n}-mc", 32, 1 + 6 * tb, movies))
        add(t0 + rng.uniform(0, 2) * HOUR, inst, _cpu_job("relion.ctffind", f"s{n}-ctf", 16, 0.5 + tb, mics))
        for k in range(rng.choice([1, 2, 2, 3])):
            spec = _relion("relion.class2d", f"s{n}-c2d-{k}", particles, box, rng.choice([1, 2, 4]),
                           {"K": rng.choice([50, 100, 150, 200])}, parts)  # fmt: skip
            add(t0 + rng.uniform(2, 24) * HOUR, inst, spec)
        for k in range(rng.choice([1, 2])):
            subset = int(particles * rng.uniform(0.3, 0.7))
            spec = _relion("relion.class3d", f"s{n}-c3d-{k}", subset, box, rng.choice([2, 4]),
                           {"K": rng.choice([3, 4, 5, 6, 8])}, parts)  # fmt: skip
            add(t0 + rng.uniform(12, 72) * HOUR, inst, spec)
        spec = _relion("relion.refine3d", f"s{n}-ref", int(particles * rng.uniform(0.2, 0.5)), box, rng.choice([2, 4]), {}, parts)
        add(t0 + rng.uniform(24, 120) * HOUR, inst, spec)
    jobs.sort(key=lambda j: (j.submit, j.spec.name))
    for k, j in enumerate(jobs):
        j.id = k
    noise = {j.id: math.exp(rng.gauss(0.0, 0.25)) for j in jobs}
    return Scenario(ss, jobs, sizes, home, speed, link, noise, lend)
