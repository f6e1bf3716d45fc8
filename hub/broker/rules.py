"""Placement rules as pure functions over in-memory views, so a pass over thousands of
jobs and sites needs no query per pair.

A site is ruled out either *for good* (hardware, software, policy, constraints: the job
could never run there as the site is described) or *for now* (offline, suspended, outside
its time window, no free capacity, an earlier attempt failed there). A job that every
site rules out for good is refused at submission.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from hub.costs.pricing import Priced, cheapest, footprint_per_hour
from hub.estimates.model import Estimate, Stat, duration, estimate
from shared.schemas.jobs import KIND_SOFTWARE, JobKind, JobSpec
from shared.schemas.sites import WEEKDAYS, PartitionCost, SitePolicy
from shared.schemas.software import CONTAINER_RUNTIMES, IMAGE_PREFIX
from shared.units import human_bytes

#: CUDA compute capability of common GPU models (lower-case names as agents report them).
GPU_ARCH: dict[str, str] = {
    "p100": "6.0", "v100": "7.0", "t4": "7.5", "rtx-2080-ti": "7.5", "a100": "8.0", "a30": "8.0",
    "a10": "8.6", "a10g": "8.6", "a40": "8.6", "rtx-a6000": "8.6", "rtx-a5000": "8.6", "rtx-3090": "8.6",
    "l4": "8.9", "l40": "8.9", "l40s": "8.9", "rtx-4090": "8.9", "rtx-6000-ada": "8.9",
    "h100": "9.0", "h200": "9.0", "gh200": "9.0", "b200": "10.0", "b100": "10.0",
}  # fmt: skip

#: Sites are ranked by when the job would finish there (earliest first). Finish times within
#: 10 % of each other are a near-tie, broken by TIE_WEIGHTS: cost first, then where the data
#: already is, then headroom (so work spreads) and the local queue.
TIE_BAND = 1.10
TIE_WEIGHTS = {"cost": 0.4, "locality": 0.3, "capacity": 0.2, "queue": 0.1}
#: A CPU-only job counts as finishing this much later at a site with GPUs: GPU sites are kept
#: for GPU work when a CPU site would finish a CPU job about as soon.
GPU_SITE_PENALTY = 1.25
#: Until transfers between two sites have been measured (bytes/s), and the fixed time a copy
#: takes to start (share approval, publishing): assumptions, corrected by measured transfers.
DEFAULT_COPY_BPS = 100e6
COPY_SETUP_S = 300.0


def copy_rate(transfers: Iterable[tuple[int, float]]) -> float | None:
    """A pair of sites' throughput as ``copy_time`` reads it, from its finished transfers (bytes,
    seconds from request to done): the bytes they moved over the time they spent moving them,
    past the set-up ``copy_time`` adds back. Pooled, so copies that were mostly set-up do not set
    the rate for large ones; None when none outlasted the set-up (nothing learned of the rate)."""
    moved, busy = 0, 0.0
    for size, seconds in transfers:
        moved += size
        busy += max(seconds - COPY_SETUP_S, 0.0)
    return moved / busy if busy > 0 else None


def arch_at_least(model: str, minimum: str) -> bool:
    arch = GPU_ARCH.get(model)
    return arch is not None and Version(arch) >= Version(minimum)


@dataclass
class PartitionView:
    name: str
    node_count: int
    cores_per_node: int
    memory_gb_per_node: float
    gpu_model: str | None
    gpus_per_node: int
    spot: bool = False
    cost: PartitionCost | None = None


@dataclass
class PartitionNow:
    """What the agent last reported of one partition (by name): CPUs and GPUs free on nodes up
    now, free on powered-down nodes it could start (elastic partitions), the longest a start
    may take; and what the hub has placed there since that report. Partitions that share nodes
    (on premises) each report the shared nodes; the site's totals bound them together."""

    cpus_free: int = 0
    cpus_bootable: int = 0
    gpus_free: dict[str, int] = field(default_factory=dict)
    gpus_bootable: dict[str, int] = field(default_factory=dict)
    boot_s: int = 0
    unseen_cpus: int = 0
    unseen_gpus: dict[str, int] = field(default_factory=dict)

    def up(self, cpus: int, gpus: int, model: str | None) -> bool:
        """Whether nodes up now have the footprint free."""
        if cpus > self.cpus_free - self.unseen_cpus:
            return False
        return not gpus or (model is not None and gpus <= self.gpus_free.get(model, 0) - self.unseen_gpus.get(model, 0))

    def startable(self, cpus: int, gpus: int, model: str | None) -> bool:
        """Whether the footprint is free on nodes up now or on nodes that can be started."""
        if cpus > self.cpus_free + self.cpus_bootable - self.unseen_cpus:
            return False
        if not gpus:
            return True
        assert model is not None
        return gpus <= self.gpus_free.get(model, 0) + self.gpus_bootable.get(model, 0) - self.unseen_gpus.get(model, 0)


@dataclass
class Network:
    """What every site's view shares: dataset sizes, where each dataset is, the measured
    throughput of past transfers between pairs of sites (source id, destination id) -> bytes/s,
    and the bytes still to move of each transfer under way between a pair (they share its rate).

    Who may serve a copy: each dataset's owner site (``owners``) and the other holders its
    sharing rules let serve it (``relays``, hub/datasets/shares.py ``relays``); a dataset whose
    owner is not given may come from any holder. ``names``: site id -> name, to name a source.

    ``uplinks``: copies out of a site share its uplink, so a copy from a holder shares its rate
    with every transfer under way out of that holder, to any site; else (the hub's default; see
    ``HubSettings.transfer_rate_shared_per_uplink``) only with those between the same pair of
    sites. bench/placement_sim.py compares the two."""

    dataset_bytes: dict[str, int] = field(default_factory=dict)
    holders: dict[str, set[int]] = field(default_factory=dict)
    pair_bps: dict[tuple[int, int], float] = field(default_factory=dict)
    in_flight: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    owners: dict[str, int] = field(default_factory=dict)
    relays: dict[str, set[int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    uplinks: bool = False

    def sharing(self, dest: int) -> Mapping[tuple[int, int], list[int]]:
        """(holder, ``dest``) -> the transfers under way a copy from the holder would share its rate with."""
        if not self.uplinks:
            return self.in_flight
        out: dict[tuple[int, int], list[int]] = {}
        for (src, _), left in self.in_flight.items():
            out.setdefault((src, dest), []).extend(left)
        return out


@dataclass
class SiteView:
    id: int
    name: str
    institution: str
    country: str
    status: str
    reachability: str
    partitions: list[PartitionView]
    software: list[tuple[str, str, str | None]]  # name, version, cuda_arch
    policy: SitePolicy
    has_snapshot: bool = False
    cpus_total: int = 0
    cpus_free: int = 0
    gpus_total: dict[str, int] = field(default_factory=dict)
    gpus_free: dict[str, int] = field(default_factory=dict)
    # Elastic partitions: free once a powered-down node is started (Slurm power saving), and the
    # longest a start may take as the agent reports it (used when the registry prices no start-up).
    cpus_bootable: int = 0
    gpus_bootable: dict[str, int] = field(default_factory=dict)
    boot_s: int = 0
    jobs_pending: int = 0
    # Per partition the agent reported (by name): room on each, so a job goes to one of them.
    part_now: dict[str, PartitionNow] = field(default_factory=dict)
    # Federated work the hub has placed here and that holds resources.
    fed_cpus: int = 0
    fed_gpus: dict[str, int] = field(default_factory=dict)
    # Placed since the last snapshot, so not yet reflected in cpus_free / gpus_free.
    unseen_cpus: int = 0
    unseen_gpus: dict[str, int] = field(default_factory=dict)
    reliability: float = 1.0
    datasets: set[str] = field(default_factory=set)  # with an AVAILABLE replica here
    runtime_stats: dict[str, Stat] = field(default_factory=dict)  # job kind -> what finished runs here taught
    network: Network = field(default_factory=Network)


@dataclass
class Verdict:
    site: str
    eligible: bool
    never: bool = False  # ruled out for good
    reasons: list[str] = field(default_factory=list)
    score: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    gpu_model: str | None = None
    partition: str | None = None  # the partition whose finish time and cost won (named in the reasons)
    # What the agent is told to submit to (sbatch -p): the chosen partition, when the site's
    # scheduler reported it by that name; else None, and the agent uses its configured default.
    queue: str | None = None


def _software_ok(spec: JobSpec, site: SiteView) -> str | None:
    needed: list[tuple[str, str, str | None]] = [(s.name.lower(), s.version, s.cuda_arch) for s in spec.software]
    implicit = KIND_SOFTWARE[JobKind(spec.kind)]
    if implicit and all(n != implicit for n, _, _ in needed):
        needed.append((implicit, "", None))
    for name, version_range, arch in needed:
        if name.startswith(IMAGE_PREFIX):
            if reason := _image_ok(name.removeprefix(IMAGE_PREFIX), site):
                return reason
            continue
        offered = [(v, a) for n, v, a in site.software if n.lower() == name]
        if not offered:
            return f"does not offer {name}"
        ok = False
        for version, built_for in offered:
            try:
                in_range = not version_range or Version(version) in SpecifierSet(version_range)
            except InvalidVersion:
                in_range = False
            if in_range and (arch is None or built_for == arch):
                ok = True
                break
        if not ok:
            have = ", ".join(f"{v}" + (f" (CUDA {a})" if a else "") for v, a in offered)
            want = version_range or "any version"
            return f"offers {name} {have}, not {want}" + (f" built for CUDA {arch}" if arch else "")
    return None


def _image_ok(image: str, site: SiteView) -> str | None:
    """A site runs an image that one of its ``image:<pattern>`` entries matches (a shell
    pattern of its allow-list, or a name its admin declared); else why not, with the
    container runtimes it has."""
    patterns = [n.lower().removeprefix(IMAGE_PREFIX) for n, _, _ in site.software if n.lower().startswith(IMAGE_PREFIX)]
    if any(fnmatch.fnmatchcase(image, p) for p in patterns):
        return None
    runtimes = [f"{n} {v}" for n, v, _ in site.software if n.lower() in CONTAINER_RUNTIMES]
    has = f"container runtime {', '.join(runtimes)}" if runtimes else "no container runtime"
    return f"does not offer {IMAGE_PREFIX}{image} ({has}; not in its allow-list of images)"


def _gpu_model_ok(spec: JobSpec, model: str | None) -> bool:
    r = spec.resources
    if model is None:
        return False
    if r.gpu_model and model != r.gpu_model:
        return False
    return not (r.min_cuda_arch and not arch_at_least(model, r.min_cuda_arch))


def partitions_for(spec: JobSpec, site: SiteView) -> list[PartitionView]:
    """The site's partitions the job may use: its spot partitions only if the job is preemptible."""
    if spec.placement.preemptible:
        return site.partitions
    return [p for p in site.partitions if not p.spot]


def misfit(spec: JobSpec, p: PartitionView, gpus: bool = True) -> str | None:
    """Why the job's footprint can never fit the partition (``gpus``: its GPUs per node too), or None."""
    r = spec.resources
    per_rank_cpus = r.threads_per_rank if r.mpi_ranks > 1 else r.cpus
    per_rank_mem = r.memory_gb / r.mpi_ranks
    if p.cores_per_node < per_rank_cpus:
        return f"{p.name}: {p.cores_per_node} cores per node < {per_rank_cpus}"
    if p.memory_gb_per_node < per_rank_mem:
        return f"{p.name}: {p.memory_gb_per_node:g} GB per node < {per_rank_mem:g}"
    if p.node_count * p.cores_per_node < r.cpus:
        return f"{p.name}: {p.node_count * p.cores_per_node} cores in all < {r.cpus}"
    if gpus and r.gpus and r.mpi_ranks == 1 and p.gpus_per_node < r.gpus:
        return f"{p.name}: {p.gpus_per_node} GPUs per node < {r.gpus}"
    return None


def _hardware_ok(spec: JobSpec, site: SiteView) -> tuple[str | None, list[str]]:
    """(reason it can never fit, GPU models it could use)."""
    r = spec.resources
    if not site.partitions:
        return "describes no partitions and has not reported any", []
    if not partitions_for(spec, site):
        return "has only spot partitions and the job is not preemptible", []
    models: list[str] = []
    reasons: list[str] = []
    for p in partitions_for(spec, site):
        if r.gpus and not _gpu_model_ok(spec, p.gpu_model):
            if why := misfit(spec, p, gpus=False):
                reasons.append(why)
            continue
        if why := misfit(spec, p):
            reasons.append(why)
            continue
        if not r.gpus:
            return None, []
        assert p.gpu_model is not None
        models.append(p.gpu_model)
    if r.gpus and not models:
        if r.gpu_model:
            return f"has no {r.gpu_model} GPUs" + (f" ({'; '.join(reasons)})" if reasons else ""), []
        if r.min_cuda_arch:
            return f"has no GPU with CUDA architecture >= {r.min_cuda_arch}", []
        return "has no GPUs", []
    if models:
        return None, sorted(set(models))
    return "no partition fits: " + "; ".join(reasons), []


def institution_refused(institution: str, site: SiteView) -> str | None:
    allowed = site.policy.allowed_institutions
    if allowed is not None and institution not in allowed:
        return f"policy: does not lend to institution {institution}"
    return None


def _policy_never(spec: JobSpec, site: SiteView) -> str | None:
    p = site.policy
    if p.allowed_kinds is not None and spec.kind.value not in p.allowed_kinds:
        return f"policy: does not accept {spec.kind.value} jobs"
    if p.max_walltime_s is not None and spec.resources.walltime_s > p.max_walltime_s:
        return f"policy: walltime {spec.resources.walltime_s}s exceeds the site's limit of {p.max_walltime_s}s"
    if spec.resources.gpus and p.gpu_share == 0:
        return "policy: lends no GPUs"
    if p.cpu_share == 0:
        return "policy: lends no CPUs"
    return None


def _constraints(spec: JobSpec, site: SiteView) -> str | None:
    c = spec.placement
    if c.allowed_sites is not None and site.name not in c.allowed_sites:
        return "not among the job's allowed_sites"
    if site.name in c.excluded_sites:
        return "excluded by the job"
    if c.countries is not None and site.country not in c.countries:
        return f"in {site.country}, outside the job's countries ({', '.join(c.countries)})"
    return None


def in_window(policy: SitePolicy, now: datetime) -> bool:
    if not policy.windows:
        return True
    local = now.astimezone(ZoneInfo(policy.timezone))
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    for w in policy.windows:
        start = int(w.start[:2]) * 60 + int(w.start[3:])
        end = int(w.end[:2]) * 60 + int(w.end[3:])
        if start < end:
            if today in w.days and start <= minute < end:
                return True
        else:  # overnight: from start today until end tomorrow
            if today in w.days and minute >= start:
                return True
            if yesterday in w.days and minute < end:
                return True
    return False


#: A job's run-time estimates by (GPU model, a site's learned statistics for its kind), kept by
#: a caller that evaluates one job at many sites (they depend on nothing else).
Runs = dict[tuple[str | None, Stat | None], Estimate]


def runtime(spec: JobSpec, site: SiteView, gpu_model: str | None, runs: Runs | None = None) -> Estimate:
    """How long the job would run at the site (hub/estimates/model.py): its p50 prices it, its
    p90 decides whether a deadline is met; none exceeds the job's walltime."""
    stat = site.runtime_stats.get(spec.kind)  # a StrEnum: the same key as its value, without the enum's lookup
    if runs is None:
        return estimate(spec, gpu_model, stat)
    found = runs.get((gpu_model, stat))
    if found is None:
        found = runs[gpu_model, stat] = estimate(spec, gpu_model, stat)
    return found


def price(spec: JobSpec, site: SiteView, gpu_models: list[str]) -> Priced | None:
    """The job priced on the cheapest of the site's partitions it may use and fits (GPU jobs: with one of ``gpu_models``)."""
    r = spec.resources
    return cheapest(partitions_for(spec, site), r.cpus, r.gpus, set(gpu_models) if r.gpus else None)


def _priced_run(priced: Priced, runtime: float) -> str:
    """E.g. '2 h 00 m on c6i + 5 m start-up'."""
    boot = f" + {duration(priced.startup_s)} start-up" if priced.startup_s else ""
    return f"{duration(runtime)} on {priced.partition}{' (spot)' if priced.spot else ''}{boot}"


def within_max_cost(spec: JobSpec, site: SiteView, models: list[str], runs: Runs | None = None) -> tuple[str | None, list[str]]:
    """(reason the job would cost more than its max_cost here, the GPU models it stays within at).
    ``runs``: the job's estimates kept by a caller that judges it at many sites."""
    if spec.max_cost is None:
        return None, models
    candidates = [[m] for m in models] if spec.resources.gpus else [[]]
    costs = []
    for c in candidates:
        p = price(spec, site, c)
        if p is not None:
            run = runtime(spec, site, c[0] if c else None, runs).p50
            costs.append((p.cost(run), c, p, run))
    within = [c for cost, c, _, _ in costs if cost <= spec.max_cost]
    if within:
        return None, [m for c in within for m in c]
    if not costs:
        return None, models  # no partition takes the footprint: the hardware check has said why
    cost, _, best, run = min(costs, key=lambda x: x[0])
    return f"would cost ≈ {cost:.2f} ({_priced_run(best, run)}), above the job's max_cost {spec.max_cost:g}", []


def fixed_checks(
    spec: JobSpec, site: SiteView, software: dict[tuple[tuple[str, str, str | None], ...], str | None] | None = None
) -> tuple[str | None, str | None, list[str]]:
    """What rules a site out for good whoever submits, split where the institution check goes:
    (the job's own constraints, the site's policy/software/hardware, usable GPU models). The
    batch placer and the submission path keep these per kind of job (hub/broker/candidates.py).
    ``software``: the job's software check by the software a site offers, kept by a caller
    that checks one job at many sites (most sites offer what some other site offers)."""
    before = _constraints(spec, site)
    after = _policy_never(spec, site)
    if after is None:
        if software is None:
            after = _software_ok(spec, site)
        else:
            offered = tuple(site.software)
            if offered not in software:
                software[offered] = _software_ok(spec, site)
            after = software[offered]
    if after:
        return before, after, []
    never, models = _hardware_ok(spec, site)
    return before, never, models


def static_verdict(spec: JobSpec, institution: str | None, site: SiteView) -> tuple[str | None, list[str]]:
    """(reason the job can never run at the site, usable GPU models). With ``institution``
    None the institution check is left to the caller."""
    before, after, models = fixed_checks(spec, site)
    never = before or (institution_refused(institution, site) if institution is not None else None) or after
    if never:
        return never, []
    return within_max_cost(spec, site, models)


def evaluate(spec: JobSpec, institution: str, site: SiteView, now: datetime, avoid: set[str]) -> Verdict:
    never, models = static_verdict(spec, institution, site)
    if never:
        return Verdict(site.name, eligible=False, never=True, reasons=[never])
    return evaluate_now(spec, site, models, now, avoid)


def needs_start(spec: JobSpec, site: SiteView, models: list[str]) -> bool:
    """Whether the job needs a node that is not up: nodes up now lack its CPUs, or GPUs of any of ``models``."""
    r = spec.resources
    if r.cpus > site.cpus_free - site.unseen_cpus:
        return True
    return bool(r.gpus) and not any(site.gpus_free.get(m, 0) - site.unseen_gpus.get(m, 0) >= r.gpus for m in models)


class Option:
    """The job on one of a site's partitions: its run time there (GPU model), the start-up of a
    node it waits for (0 when nodes up now have room), and its price (``cost``), and when it
    would finish (``finish``, the copy aside). A plain class: one is built per partition of
    every verdict, and a dataclass's ``__post_init__`` cost a call more."""

    __slots__ = ("cost", "finish", "model", "partition", "priced", "reported", "run", "startup")

    def __init__(
        self, partition: PartitionView, model: str | None, run: Estimate, startup: int, priced: Priced, reported: bool
    ) -> None:
        self.partition, self.model, self.run, self.startup, self.priced = partition, model, run, startup, priced
        self.reported = reported  # the agent reported this partition by name: it is told to submit there
        self.cost: float = priced.cost(run.p50)
        self.finish: float = run.p50 + startup


#: A partition a job could use at a site whatever is free now: (partition, its GPU model for a
#: GPU job, the price per hour of the job's footprint there, the start-up it charges, the job's
#: run-time estimate there, and the options on it by the start-up the job waits for, kept as they are made).
Usable = tuple[PartitionView, str | None, float, int, Estimate, dict[int, "Option"]]


def _may_use(spec: JobSpec, site: SiteView, models: list[str]) -> Iterator[tuple[PartitionView, str | None]]:
    """The site's partitions the job may use whatever is free now (spot only if it is
    preemptible; GPU jobs: of ``models``, with enough GPUs in all), each with its GPU model."""
    r = spec.resources
    for p in partitions_for(spec, site):
        model = p.gpu_model if r.gpus else None
        if r.gpus and (model not in models or p.node_count * p.gpus_per_node < r.gpus):
            continue
        if misfit(spec, p) is None:
            yield p, model


def _usable(spec: JobSpec, site: SiteView, models: list[str]) -> Iterator[tuple[PartitionView, str | None]]:
    """``_may_use``, GPU jobs: with GPUs of that model within the site's share now."""
    gpus = spec.resources.gpus
    for p, model in _may_use(spec, site, models):
        if not gpus or (model is not None and gpus_available(site, model) >= gpus):
            yield p, model


def _partitions(spec: JobSpec, site: SiteView, models: list[str], runs: Runs) -> list[Usable]:
    """``_may_use``, each with its price and run time: what work reserved at the site leaves
    as it is (``options`` adds what it changes)."""
    r = spec.resources
    out: list[Usable] = []
    for p, model in _may_use(spec, site, models):
        per_hour, charged = footprint_per_hour(p.cost, p.spot, p.cores_per_node, p.gpus_per_node, r.cpus, r.gpus)
        out.append((p, model, per_hour, charged, runtime(spec, site, model, runs), {}))
    return out


def _full(p: PartitionView, now: PartitionNow, model: str | None) -> str:
    """E.g. 'c5-vcpu36: 4 CPUs free (counting nodes that can be started)'."""
    gpus = f", {max(now.gpus_free.get(model, 0) - now.unseen_gpus.get(model, 0), 0)} {model} GPUs" if model else ""
    startable = " (counting nodes that can be started)" if now.cpus_bootable or now.gpus_bootable else ""
    return f"{p.name}: {max(now.cpus_free + now.cpus_bootable - now.unseen_cpus, 0)} CPUs{gpus} free{startable}"


def partition_room(spec: JobSpec, site: SiteView, models: list[str]) -> str | None:
    """Why none of the partitions the job may use has room now, by what the agent reported of
    each, or None. A partition it did not report is judged by the site's room (``room``)."""
    if not site.part_now:
        return None
    r = spec.resources
    full = []
    for p, model in _usable(spec, site, models):
        now = site.part_now.get(p.name)
        if now is None or now.startable(r.cpus, r.gpus, model):
            return None
        full.append(_full(p, now, model))
    return "no partition has room now: " + "; ".join(full) if full else None


#: Prices are immutable and the same footprint on the same partition is priced alike for job
#: after job: one instance each, kept (a frozen dataclass is slow to build).
_priced = lru_cache(maxsize=4096, typed=True)(Priced)


def options(spec: JobSpec, site: SiteView, models: list[str], runs: Runs | None = None) -> list[Option]:
    """The partitions the job may use (``_partitions``) that have room now (``partition_room``),
    priced. A partition the agent reported is judged by its own room; one it did not (a
    scheduler that names its queues otherwise, the local backend) by the site's."""
    return _options(spec, site, _partitions(spec, site, models, {} if runs is None else runs))


def _options(spec: JobSpec, site: SiteView, usable: list[Usable]) -> list[Option]:
    """``options`` from the site's ``_partitions``: those with GPUs of their model within the
    site's share and room now, with the start-up of a node the job would wait for."""
    r = spec.resources
    out: list[Option] = []
    part_now = site.part_now
    for p, model, per_hour, charged, run, made in usable:
        if r.gpus and (model is None or gpus_available(site, model) < r.gpus):
            continue
        now = part_now.get(p.name) if part_now else None
        if now is None:  # ``needs_start`` for this partition's model
            free = site.cpus_free - site.unseen_cpus
            boots = r.cpus > free or (
                bool(r.gpus) and not (model and site.gpus_free.get(model, 0) - site.unseen_gpus.get(model, 0) >= r.gpus)
            )
        elif now.startable(r.cpus, r.gpus, model):
            boots = not now.up(r.cpus, r.gpus, model)
        else:
            continue
        # A node already up is not started again, nor paid for again.
        startup = (charged or (now.boot_s if now else 0) or site.boot_s) if boots else 0
        option = made.get(startup)  # the same for every placement alike: kept (an option is not changed once made)
        if option is None:
            option = made[startup] = Option(p, model, run, startup, _priced(p.name, per_hour, startup, p.spot), now is not None)
        out.append(option)
    return out


def _limits(spec: JobSpec, opts: list[Option], now: datetime) -> tuple[list[Option], str | None]:
    """The options within the job's deadline (at the run time's p90) and max_cost, or why none is."""
    if spec.deadline is not None:
        timely = [o for o in opts if now + timedelta(seconds=o.run.p90 + o.startup) <= spec.deadline]
        if not timely:
            soonest = min(opts, key=lambda o: o.run.p90 + o.startup)
            finish = now + timedelta(seconds=soonest.run.p90 + soonest.startup)
            return [], (
                f"would likely finish by {finish:%Y-%m-%d %H:%M} UTC (p90 run time {duration(soonest.run.p90)}), after the "
                f"deadline {spec.deadline.astimezone(finish.tzinfo):%Y-%m-%d %H:%M} UTC"
            )
        opts = timely
    if spec.max_cost is not None:
        within = [o for o in opts if o.cost <= spec.max_cost]
        if not within:
            cheap = min(opts, key=lambda o: o.cost)
            return [], (f"would cost ≈ {cheap.cost:.2f} ({_priced_run(cheap.priced, cheap.run.p50)}) on the partitions "
                        f"with room now, above the job's max_cost {spec.max_cost:g}")  # fmt: skip
        opts = within
    return opts, None


def beyond_limits(spec: JobSpec, site: SiteView, models: list[str], now: datetime, runs: Runs | None = None) -> str | None:
    """Why the job's deadline or max_cost rules the site out now on the partitions with room
    (``evaluate_now``'s last check, for a site that is open and has room), or None."""
    if spec.deadline is None and spec.max_cost is None:
        return None
    opts = options(spec, site, models, runs)
    return _limits(spec, opts, now)[1] if opts else None


_LOG_TIE_BAND = math.log(TIE_BAND)


def _band(ranked_s: float) -> int:
    """Finish times within TIE_BAND of each other share a band (under a minute, all finish "now")."""
    return math.floor(math.log(max(ranked_s, 60.0)) / _LOG_TIE_BAND)


#: The tie-break's weights, read once (``evaluate_now`` runs once per job placed).
_W_COST, _W_LOCALITY, _W_CAPACITY, _W_QUEUE = (TIE_WEIGHTS[k] for k in ("cost", "locality", "capacity", "queue"))


class Standing:
    """What ``evaluate_now`` reads of a job at an open site that work reserved there
    (``reserve``) leaves as it is: the partitions it could use (``_partitions``), the copy of
    its inputs, and the parts and words of a verdict taken from them. ``evaluate_now`` builds
    one per call, or reads the one kept by a caller that scores the job at the site again (the
    batch placer: jobs alike go on scoring the sites they were placed at) while the site
    changes only by the work reserved there."""

    __slots__ = ("copy_part", "copy_s", "copying", "finishes", "gpu_site", "models", "near", "plan", "queue",
                 "reliability", "several", "slow", "usable")  # fmt: skip

    def __init__(self, spec: JobSpec, site: SiteView, models: list[str], runs: Runs) -> None:
        r = spec.resources
        self.models = models
        self.usable = _partitions(spec, site, models, runs)
        self.plan = plan = copy_plan(spec, site) if spec.inputs else []
        copy_s, copy_bytes = (sum((c.seconds for c in plan), 0.0), sum(c.size for c in plan)) if plan else (0.0, 0)
        self.copy_s, self.copy_part = copy_s, round(copy_s, 1) if copy_s else copy_s
        # Expected time to an answer: a site that loses 1 attempt in 5 takes 1/0.8 as long, on average.
        self.gpu_site = not r.gpus and bool(site.gpus_total)
        self.slow = (GPU_SITE_PENALTY if self.gpu_site else 1.0) / max(site.reliability, 0.05)
        self.queue, self.reliability = round(1 / (1 + site.jobs_pending), 4), round(site.reliability, 4)
        self.near = round(locality(spec, site), 4) if spec.inputs else 0.0
        self.copying = "inputs here" if spec.inputs else "no inputs"
        if copy_bytes:
            self.copying = f"{duration(copy_s)} copying {copied(plan, site.network)}"
        self.several = len(site.partitions) > 1
        # By (partition, start-up waited for): what a verdict on that option takes from it (``_finish``).
        self.finishes: dict[tuple[str, int], Finish] = {}


def evaluate_now(
    spec: JobSpec,
    site: SiteView,
    models: list[str],
    now: datetime,
    avoid: set[str],
    runs: Runs | None = None,
    kept: dict[int, Standing] | None = None,
) -> Verdict:
    """The part of ``evaluate`` that changes from moment to moment, for a site that passed the
    static checks. The job goes to the site's partition where it finishes first, near-ties
    (the band the site is ranked by) broken by cost, then by name. ``runs``: the job's
    estimates kept by a caller that evaluates it at many sites; ``kept``: its ``Standing`` at
    each site (by id), kept by a caller that evaluates it at a site again after reserving work.

    A broker pass scores one site exactly per job it places, so this is written for speed:
    the checks that pass for an open site with room are tested before their reasons are
    written, and work that gives nothing for a job without inputs, a site with one partition
    or a free partition is skipped. Every number and word is what the plain computation gives."""
    if (site.status != "active" or site.reachability != "online" or site.name in avoid or not site.has_snapshot
            or (site.policy.windows and not in_window(site.policy, now))):  # fmt: skip
        return Verdict(site.name, eligible=False, reasons=closed(site, now, avoid))
    r = spec.resources
    short = _short(spec, site, models)
    if short:
        return Verdict(site.name, eligible=False, reasons=short)
    st = None if kept is None else kept.get(site.id)
    if st is None or (st.models is not models and st.models != models):
        st = Standing(spec, site, models, {} if runs is None else runs)
        if kept is not None:
            kept[site.id] = st
    opts = _options(spec, site, st.usable)
    assert opts, "room() found a partition with room"
    if spec.deadline is not None or spec.max_cost is not None:
        opts, beyond = _limits(spec, opts, now)
        if beyond is not None:
            return Verdict(site.name, eligible=False, reasons=[beyond])
    copy_s, slow = st.copy_s, st.slow
    o = opts[0] if len(opts) == 1 else min(opts, key=lambda x: (_band((copy_s + x.finish) * slow), x.cost, x.partition.name))
    startup, model = o.startup, o.model
    if model:
        headroom = (gpus_available(site, model) - r.gpus) / max(site.gpus_total.get(model, 1), 1)
    else:
        headroom = (cpus_available(site) - r.cpus) / max(site.cpus_total, 1)
    finish = st.finishes.get((o.partition.name, startup))
    if finish is None:  # the option's parts and words but for the headroom: the same for each placement alike
        finish = st.finishes[o.partition.name, startup] = _finish(spec, st, o)
    parts, band, tie, finishes, priced = finish
    parts = parts.copy()
    parts["capacity"] = capacity = round(headroom, 4)
    headroom = max(min(capacity, 1.0), 0.0)
    tie = tie + _W_CAPACITY * (1 - headroom) + _W_QUEUE * (1 - st.queue)
    score = round(1000 - band - tie, 6)
    why = [f"{r.cpus} of {site.cpus_free - site.unseen_cpus} free CPUs"]
    if model:
        why.append(f"{r.gpus} of its {model} GPUs")
    why.append(finishes)
    if priced:
        why.append(priced)
    if st.gpu_site:
        why.append("a GPU site: kept for GPU work when a CPU site finishes about as soon")
    if st.several:
        why.append(_partition_choice(o, [x for x in opts if x is not o]))
    return Verdict(site.name, eligible=True, reasons=why, score=score, parts=parts, gpu_model=model,
                   partition=o.partition.name, queue=o.partition.name if o.reported else None)  # fmt: skip


#: What a verdict takes from the option chosen (``Standing.finishes``): its parts but for the
#: capacity, its band, the tie-break's cost and locality terms, its words on when it finishes and what it costs.
Finish = tuple[dict[str, float], int, float, str, str | None]


def _finish(spec: JobSpec, st: Standing, o: Option) -> Finish:
    run, startup, cost = o.run, o.startup, o.cost
    finish_s = st.copy_s + run.p50 + startup
    p10, p50, p90, runs_learned = run.rounded
    parts = {
        "finish_s": round(finish_s, 1),
        "copy_s": st.copy_part,
        "run_p10_s": p10,
        "run_s": p50,
        "run_p90_s": p90,
        "runs": runs_learned,  # finished runs the estimate learned from (the dashboard shows the estimate as placed)
        "startup_s": float(startup),
        "cost": round(cost, 4) if cost else cost,
        "capacity": 0.0,  # the share left free after the job: ``evaluate_now`` sets it
        "queue": st.queue,
        "reliability": st.reliability,
        "locality": st.near,
    }
    boot = f", {duration(startup)} start-up of a powered-down node" if startup else ""
    finishes = f"finishes in ~{duration(finish_s)}: {st.copying}, no wait, {run.described}{boot}"
    priced = f"≈ {cost:.2f} for {_priced_run(o.priced, run.p50)}" if o.priced.per_hour > 0 else None
    tie = _W_COST * cost / (1 + cost) + _W_LOCALITY * (1 - st.near)
    return parts, _band(finish_s * st.slow), tie, finishes, priced


def _partition_choice(chosen: Option, others: list[Option]) -> str:
    """E.g. 'partition g5-spot (spot): soonest finish (within 10 %), then cheapest; g5: ~1 h 05 m, ≈ 5.67'
    (the run and start-up on each: the copy is the same for every partition of the site)."""
    spot = " (spot)" if chosen.partition.spot else ""
    alt = [f"{x.partition.name}: ~{duration(x.finish)}" + (f", ≈ {x.cost:.2f}" if x.priced.per_hour > 0 else "")
           for x in sorted(others, key=lambda x: (x.finish, x.cost, x.partition.name))[:3]]  # fmt: skip
    return f"partition {chosen.partition.name}{spot}: soonest finish (within 10 %), then cheapest" + (
        f"; {'; '.join(alt)}" if alt else ""
    )


def closed(site: SiteView, now: datetime, avoid: set[str]) -> list[str]:
    """Why the site takes no work at all now, whatever the job (its first reason is the one recorded)."""
    reasons = []
    if site.status != "active":
        reasons.append(f"site is {site.status}")
    if site.reachability != "online":
        reasons.append(f"agent is {site.reachability}")
    if site.name in avoid:
        reasons.append("an earlier attempt of this job failed or was refused here")
    if not in_window(site.policy, now):
        reasons.append(f"outside the site's lending hours ({site.policy.timezone})")
    if not site.has_snapshot:
        reasons.append("no capacity reported yet")
    return reasons


def cpus_available(site: SiteView) -> int:
    """CPUs the site could give a job now, within what its share still lends to the network:
    free on nodes that are up, or on powered-down nodes of elastic partitions it can start."""
    free = site.cpus_free - site.unseen_cpus + site.cpus_bootable
    return min(free, int(site.cpus_total * site.policy.cpu_share) - site.fed_cpus)


def gpus_available(site: SiteView, model: str) -> int:
    """GPUs of ``model`` the site could give a job now (up or startable), within its GPU share."""
    free = site.gpus_free.get(model, 0) - site.unseen_gpus.get(model, 0) + site.gpus_bootable.get(model, 0)
    return min(free, int(site.gpus_total.get(model, 0) * site.policy.gpu_share) - site.fed_gpus.get(model, 0))


def room(spec: JobSpec, site: SiteView, models: list[str]) -> tuple[list[str], str | None, float, bool]:
    """(why the job does not fit in what the site lends now, the GPU model it would use, the
    share of the site's CPUs, or of that model's GPUs, still free after it, whether it needs
    a node started). Free now means on nodes that are up; capacity on powered-down nodes of
    elastic partitions counts too, after a node start-up the job waits for only when it
    needs such a node. A GPU model free on nodes up now is chosen first, then the one with
    the most available. With the site's room, one of the partitions the job may use must have
    it too (``partition_room``)."""
    r = spec.resources
    reasons = []
    free_cpus = site.cpus_free - site.unseen_cpus
    lend_cpus = int(site.cpus_total * site.policy.cpu_share) - site.fed_cpus
    if r.cpus > free_cpus + site.cpus_bootable:
        startable = f" (and {site.cpus_bootable} on nodes that can be started)" if site.cpus_bootable else ""
        reasons.append(f"needs {r.cpus} CPUs, {max(free_cpus, 0)} free{startable}")
    elif r.cpus > lend_cpus:
        reasons.append(f"needs {r.cpus} CPUs, the site's share leaves {max(lend_cpus, 0)} for the network")
    boots = r.cpus > free_cpus
    if not reasons and site.part_now and (full := partition_room(spec, site, models)):
        reasons.append(full)
    if not r.gpus:  # headroom after the job, of what ``cpus_available`` gives
        return reasons, None, (min(free_cpus + site.cpus_bootable, lend_cpus) - r.cpus) / max(site.cpus_total, 1), boots
    best = None
    for m in models:
        avail = gpus_available(site, m)
        key = (r.gpus <= site.gpus_free.get(m, 0) - site.unseen_gpus.get(m, 0), avail)
        if avail >= r.gpus and (best is None or key > best[2]):
            best = (m, avail, key)
    if best is None:
        detail = ", ".join(f"{m} {max(site.gpus_free.get(m, 0) - site.unseen_gpus.get(m, 0), 0)} free"
                           + (f" + {site.gpus_bootable[m]} startable" if site.gpus_bootable.get(m) else "")
                           for m in models)  # fmt: skip
        reasons.append(f"needs {r.gpus} GPUs ({detail or 'none'}) within the site's GPU share")
        return reasons, None, 0.0, boots
    return reasons, best[0], (best[1] - r.gpus) / max(site.gpus_total.get(best[0], 1), 1), boots or not best[2][0]


def _short(spec: JobSpec, site: SiteView, models: list[str]) -> list[str]:
    """``room``'s reasons alone: none, tested without writing them, where the site has room."""
    r = spec.resources
    if (r.cpus > site.cpus_free - site.unseen_cpus + site.cpus_bootable
            or r.cpus > int(site.cpus_total * site.policy.cpu_share) - site.fed_cpus
            or (site.part_now and partition_room(spec, site, models))
            or (r.gpus and not _lends_gpus(site, models, r.gpus))):  # fmt: skip
        return room(spec, site, models)[0]
    return []


def _lends_gpus(site: SiteView, models: list[str], gpus: int) -> bool:
    """Whether the site lends ``gpus`` GPUs of one of ``models`` now (``gpus_available``)."""
    return any(gpus_available(site, m) >= gpus for m in models)


def link_time(size: int, bps: float, ahead: list[int]) -> float:
    """Seconds to move ``size`` bytes over a link of ``bps`` that transfers with ``ahead`` bytes
    still to move share equally: until each of them lands, it takes as many bytes of the link's
    time as the new copy moves (processor sharing; transfers that start later are not foreseen)."""
    return (size + sum(min(b, size) for b in ahead)) / bps


def sources(net: Network, dataset: str) -> list[int]:
    """The holders a copy of ``dataset`` may come from: its owner and the holders its sharing
    rules let serve it (``Network.relays``); every holder when its owner is not known."""
    held = net.holders.get(dataset, ())
    owner = net.owners.get(dataset)
    if owner is None:
        return list(held)
    relays = net.relays.get(dataset, ())
    return [h for h in held if h == owner or h in relays]


def fastest_source(
    size: int,
    dest: int,
    holders: Iterable[int],
    owner: int | None,
    pair_bps: Mapping[tuple[int, int], float],
    in_flight: Mapping[tuple[int, int], list[int]],
) -> tuple[int | None, float]:
    """(the holder a copy of ``size`` bytes reaches ``dest`` from soonest, seconds it moves
    bytes): the measured throughput of each pair (DEFAULT_COPY_BPS until measured) shared with
    the transfers under way on it (``link_time``); on a tie the owner, then the lowest id. The
    broker's estimate and the transfer the hub starts (hub/transfers/service.py) both choose
    here. (None, the default rate's time) when no holder may serve it."""
    best: tuple[float, bool, int] | None = None
    for h in holders:
        key = (link_time(size, pair_bps.get((h, dest), DEFAULT_COPY_BPS), in_flight.get((h, dest), [])), h != owner, h)
        if best is None or key < best:
            best = key
    return (None, size / DEFAULT_COPY_BPS) if best is None else (best[2], best[0])


class Copy(NamedTuple):
    """One input the job lacks at a site: its size, the holder it would come from and the
    seconds it takes (set-up included)."""

    dataset: str
    size: int
    source: int | None
    seconds: float


def copy_plan(spec: JobSpec, site: SiteView) -> list[Copy]:
    """The copies bringing the job's inputs here: each missing dataset from the holder that may
    serve it (``sources``) and would bring it soonest (``fastest_source``), one after another."""
    net = site.network
    out: list[Copy] = []
    ahead = None
    for ref in spec.inputs:
        if ref.dataset in site.datasets:
            continue
        size = net.dataset_bytes.get(ref.dataset, 0)
        owner = net.owners.get(ref.dataset)
        ahead = net.sharing(site.id) if ahead is None else ahead
        src, moving = fastest_source(size, site.id, sources(net, ref.dataset), owner, net.pair_bps, ahead)
        out.append(Copy(ref.dataset, size, src, COPY_SETUP_S + moving))
    return out


def copy_time(spec: JobSpec, site: SiteView) -> tuple[float, int]:
    """(seconds to bring the job's inputs here, bytes to bring), by ``copy_plan``. Transfers
    under way only lengthen a copy, and a holder that may not serve it only leaves slower
    ones, so the batch placer's bound from a site that holds none of the inputs and has no
    measured transfers from their holders (search.Board.blank) stays a bound."""
    seconds, moved = 0.0, 0
    for c in copy_plan(spec, site):
        seconds += c.seconds
        moved += c.size
    return seconds, moved


def copied(plan: list[Copy], net: Network) -> str:
    """E.g. '40 GB from osaka-gpu', or '42 GB: 40 GB from osaka-gpu, 2.0 GB from kek-krios'."""
    by: dict[int | None, int] = {}
    for c in plan:
        by[c.source] = by.get(c.source, 0) + c.size
    total = human_bytes(sum(by.values()))

    def named(src: int | None) -> str:
        return "" if src is None else f" from {net.names.get(src, f'site {src}')}"

    if len(by) == 1:
        return total + named(next(iter(by)))
    return f"{total}: " + ", ".join(f"{human_bytes(n)}{named(src)}" for src, n in by.items())


def locality(spec: JobSpec, site: SiteView) -> float:
    """The share of the job's input datasets already AVAILABLE at the site (0 without inputs)."""
    if not spec.inputs:
        return 0.0
    return sum(1 for d in spec.inputs if d.dataset in site.datasets) / len(spec.inputs)


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """Eligible sites best first; ties broken by name so decisions are repeatable."""
    return sorted((v for v in verdicts if v.eligible), key=lambda v: (-(v.score or 0), v.site))


def reserve(site: SiteView, spec: JobSpec, model: str | None, partition: str | None = None) -> None:
    """Account a placement in the view (and on its partition's), so later jobs in the same pass see less free."""
    now = site.part_now.get(partition) if partition else None
    if now is not None:
        now.unseen_cpus += spec.resources.cpus
        if model:
            now.unseen_gpus[model] = now.unseen_gpus.get(model, 0) + spec.resources.gpus
    site.unseen_cpus += spec.resources.cpus
    site.fed_cpus += spec.resources.cpus
    if model:
        site.unseen_gpus[model] = site.unseen_gpus.get(model, 0) + spec.resources.gpus
        site.fed_gpus[model] = site.fed_gpus.get(model, 0) + spec.resources.gpus
