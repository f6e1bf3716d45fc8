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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from hub.costs.pricing import Priced, cheapest
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
class Network:
    """What every site's view shares: dataset sizes, where each dataset is, and the measured
    throughput of past transfers between pairs of sites (source id, destination id) -> bytes/s."""

    dataset_bytes: dict[str, int] = field(default_factory=dict)
    holders: dict[str, set[int]] = field(default_factory=dict)
    pair_bps: dict[tuple[int, int], float] = field(default_factory=dict)


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


def _hardware_ok(spec: JobSpec, site: SiteView) -> tuple[str | None, list[str]]:
    """(reason it can never fit, GPU models it could use)."""
    r = spec.resources
    if not site.partitions:
        return "describes no partitions and has not reported any", []
    if not partitions_for(spec, site):
        return "has only spot partitions and the job is not preemptible", []
    per_rank_cpus = r.threads_per_rank if r.mpi_ranks > 1 else r.cpus
    per_rank_mem = r.memory_gb / r.mpi_ranks
    models: list[str] = []
    reasons: list[str] = []
    for p in partitions_for(spec, site):
        if p.cores_per_node < per_rank_cpus:
            reasons.append(f"{p.name}: {p.cores_per_node} cores per node < {per_rank_cpus}")
            continue
        if p.memory_gb_per_node < per_rank_mem:
            reasons.append(f"{p.name}: {p.memory_gb_per_node:g} GB per node < {per_rank_mem:g}")
            continue
        if p.node_count * p.cores_per_node < r.cpus:
            reasons.append(f"{p.name}: {p.node_count * p.cores_per_node} cores in all < {r.cpus}")
            continue
        if r.gpus:
            if not _gpu_model_ok(spec, p.gpu_model):
                continue
            if r.mpi_ranks == 1 and p.gpus_per_node < r.gpus:
                reasons.append(f"{p.name}: {p.gpus_per_node} GPUs per node < {r.gpus}")
                continue
            assert p.gpu_model is not None
            models.append(p.gpu_model)
        else:
            return None, []
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


def runtime(spec: JobSpec, site: SiteView, gpu_model: str | None) -> Estimate:
    """How long the job would run at the site (hub/estimates/model.py): its p50 prices it, its
    p90 decides whether a deadline is met; none exceeds the job's walltime."""
    return estimate(spec, gpu_model, site.runtime_stats.get(spec.kind.value))


def price(spec: JobSpec, site: SiteView, gpu_models: list[str]) -> Priced | None:
    """The job priced on the cheapest of the site's partitions it may use and fits (GPU jobs: with one of ``gpu_models``)."""
    r = spec.resources
    return cheapest(partitions_for(spec, site), r.cpus, r.gpus, set(gpu_models) if r.gpus else None)


def _priced_run(priced: Priced, runtime: float) -> str:
    """E.g. '2 h 00 m on c6i + 5 m start-up'."""
    boot = f" + {duration(priced.startup_s)} start-up" if priced.startup_s else ""
    return f"{duration(runtime)} on {priced.partition}{' (spot)' if priced.spot else ''}{boot}"


def within_max_cost(spec: JobSpec, site: SiteView, models: list[str]) -> tuple[str | None, list[str]]:
    """(reason the job would cost more than its max_cost here, the GPU models it stays within at)."""
    if spec.max_cost is None:
        return None, models
    candidates = [[m] for m in models] if spec.resources.gpus else [[]]
    costs = []
    for c in candidates:
        p = price(spec, site, c)
        if p is not None:
            run = runtime(spec, site, c[0] if c else None).p50
            costs.append((p.cost(run), c, p, run))
    within = [c for cost, c, _, _ in costs if cost <= spec.max_cost]
    if within:
        return None, [m for c in within for m in c]
    if not costs:
        return None, models  # no partition takes the footprint: the hardware check has said why
    cost, _, best, run = min(costs, key=lambda x: x[0])
    return f"would cost ≈ {cost:.2f} ({_priced_run(best, run)}), above the job's max_cost {spec.max_cost:g}", []


def fixed_checks(spec: JobSpec, site: SiteView) -> tuple[str | None, str | None, list[str]]:
    """What rules a site out for good whoever submits, split where the institution check goes:
    (the job's own constraints, the site's policy/software/hardware, usable GPU models). The
    batch placer and the submission path keep these per kind of job (hub/broker/candidates.py)."""
    before = _constraints(spec, site)
    after = _policy_never(spec, site) or _software_ok(spec, site)
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


def evaluate_now(spec: JobSpec, site: SiteView, models: list[str], now: datetime, avoid: set[str]) -> Verdict:
    """The part of ``evaluate`` that changes from moment to moment, for a site that passed the static checks."""
    reasons = closed(site, now, avoid)
    if spec.deadline is not None:
        priced = price(spec, site, models)
        late = runtime(spec, site, models[0] if models else None).p90
        starting = ((priced.startup_s if priced else 0) or site.boot_s) if needs_start(spec, site, models) else 0
        finish = now + timedelta(seconds=late + starting)
        if finish > spec.deadline:
            reasons.append(
                f"would likely finish by {finish:%Y-%m-%d %H:%M} UTC (p90 run time {duration(late)}), after the "
                f"deadline {spec.deadline.astimezone(finish.tzinfo):%Y-%m-%d %H:%M} UTC"
            )
    if reasons:
        return Verdict(site.name, eligible=False, reasons=reasons)
    r = spec.resources
    short, chosen_model, headroom, boots = room(spec, site, models)
    if short:
        return Verdict(site.name, eligible=False, reasons=short)
    free_cpus = site.cpus_free - site.unseen_cpus
    run = runtime(spec, site, chosen_model)
    priced = price(spec, site, [chosen_model] if chosen_model else [])
    startup = ((priced.startup_s if priced else 0) or site.boot_s) if boots else 0
    if priced is not None:
        priced = replace(priced, startup_s=startup)  # a node already up is not started again, nor paid for again
    cost = priced.cost(run.p50) if priced else 0.0
    copy_s, copy_bytes = copy_time(spec, site)
    finish_s = copy_s + run.p50 + startup
    # Expected time to an answer: a site that loses 1 attempt in 5 takes 1/0.8 as long, on average.
    ranked = finish_s / max(site.reliability, 0.05) * (GPU_SITE_PENALTY if not r.gpus and site.gpus_total else 1.0)
    parts = {
        "finish_s": round(finish_s, 1),
        "copy_s": round(copy_s, 1),
        "run_p10_s": round(run.p10, 1),
        "run_s": round(run.p50, 1),
        "run_p90_s": round(run.p90, 1),
        "runs": float(run.runs),  # finished runs the estimate learned from (the dashboard shows the estimate as placed)
        "startup_s": float(startup),
        "cost": round(cost, 4),
        "capacity": round(headroom, 4),
        "queue": round(1 / (1 + site.jobs_pending), 4),
        "reliability": round(site.reliability, 4),
        "locality": round(locality(spec, site), 4),
    }
    headroom = max(min(parts["capacity"], 1.0), 0.0)
    tie = (TIE_WEIGHTS["cost"] * cost / (1 + cost) + TIE_WEIGHTS["locality"] * (1 - parts["locality"])
           + TIE_WEIGHTS["capacity"] * (1 - headroom) + TIE_WEIGHTS["queue"] * (1 - parts["queue"]))  # fmt: skip
    band = math.floor(math.log(max(ranked, 60.0)) / math.log(TIE_BAND))  # under a minute, all finish "now"
    score = round(1000 - band - tie, 6)
    why = [f"{r.cpus} of {free_cpus} free CPUs"] + ([f"{r.gpus} of its {chosen_model} GPUs"] if chosen_model else [])
    copying = (
        f"{duration(copy_s)} copying {human_bytes(copy_bytes)}" if copy_bytes else "inputs here" if spec.inputs else "no inputs"
    )
    boot = f", {duration(startup)} start-up of a powered-down node" if startup else ""
    why.append(f"finishes in ~{duration(finish_s)}: {copying}, no wait, {run.describe()}{boot}")
    if priced is not None and priced.per_hour > 0:
        why.append(f"≈ {cost:.2f} for {_priced_run(priced, run.p50)}")
    if not r.gpus and site.gpus_total:
        why.append("a GPU site: kept for GPU work when a CPU site finishes about as soon")
    return Verdict(site.name, eligible=True, reasons=why, score=score, parts=parts, gpu_model=chosen_model)


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
    the most available."""
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
    if not r.gpus:
        return reasons, None, (cpus_available(site) - r.cpus) / max(site.cpus_total, 1), boots
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


def copy_time(spec: JobSpec, site: SiteView) -> tuple[float, int]:
    """(seconds to bring the job's inputs here, bytes to bring): each missing dataset from the
    holder with the fastest measured transfers to this site, copies one after another."""
    net = site.network
    seconds, moved = 0.0, 0
    for ref in spec.inputs:
        if ref.dataset in site.datasets:
            continue
        size = net.dataset_bytes.get(ref.dataset, 0)
        bps = max((net.pair_bps.get((h, site.id), DEFAULT_COPY_BPS) for h in net.holders.get(ref.dataset, ())),
                  default=DEFAULT_COPY_BPS)  # fmt: skip
        seconds += COPY_SETUP_S + size / bps
        moved += size
    return seconds, moved


def locality(spec: JobSpec, site: SiteView) -> float:
    """The share of the job's input datasets already AVAILABLE at the site (0 without inputs)."""
    if not spec.inputs:
        return 0.0
    return sum(1 for d in spec.inputs if d.dataset in site.datasets) / len(spec.inputs)


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """Eligible sites best first; ties broken by name so decisions are repeatable."""
    return sorted((v for v in verdicts if v.eligible), key=lambda v: (-(v.score or 0), v.site))


def reserve(site: SiteView, spec: JobSpec, model: str | None) -> None:
    """Account a placement in the view, so later jobs in the same pass see less free."""
    site.unseen_cpus += spec.resources.cpus
    site.fed_cpus += spec.resources.cpus
    if model:
        site.unseen_gpus[model] = site.unseen_gpus.get(model, 0) + spec.resources.gpus
        site.fed_gpus[model] = site.fed_gpus.get(model, 0) + spec.resources.gpus
