"""Broker throughput: 10,000 queued jobs over 1,000 simulated sites.

In memory: ``place_batch`` against the one-by-one full scan (every job against every
site) measured in the same run on a slice, as the baseline. Through the database: one
real ``place_queued`` pass on SQLite, which also writes 10,000 attempts and decisions: in
bulk, and one ORM object each (the previous path) as that part's baseline.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.broker.batch import place_batch
from hub.broker.rules import PartitionView, SiteView, evaluate, rank, reserve
from shared.schemas.capacity import CapacityTotals
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SitePolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SHAPES: list[dict[str, Any]] = [
    {"cpus": 4, "memory_gb": 8},
    {"cpus": 16, "memory_gb": 64},
    {"cpus": 1},
    {"cpus": 2, "gpus": 1, "gpu_model": "a100"},
    {"cpus": 8, "gpus": 2, "min_cuda_arch": "8.0"},
    {"cpus": 64, "mpi_ranks": 8, "threads_per_rank": 8, "memory_gb": 256},
]


def sites(n: int, seed: int = 1) -> list[SiteView]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gpu = rng.choice([None, None, "a100", "h100", "v100", "a10g"])
        nodes, cores = rng.randint(2, 100), rng.choice([32, 64, 128])
        v = SiteView(
            id=i + 1,
            name=f"site-{i:04d}",
            institution=f"inst-{i % 50}",
            country=rng.choice(["JP", "DE", "US", "GB"]),
            status="active",
            reachability="online",
            partitions=[PartitionView("main", nodes, cores, 512, gpu, 4 if gpu else 0)],
            software=[("relion", rng.choice(["4.0", "5.0"]), None)],
            policy=SitePolicy(cpu_share=rng.choice([1.0, 0.5, 0.25])),
            has_snapshot=True,
            cpus_total=nodes * cores,
            jobs_pending=rng.randint(0, 50),
        )
        v.cpus_free = rng.randint(v.cpus_total // 4, v.cpus_total)
        if gpu:
            v.gpus_total = {gpu: nodes * 4}
            v.gpus_free = {gpu: rng.randint(0, nodes * 4)}
        out.append(v)
    return out


def jobs(n: int, seed: int = 2) -> list[tuple[JobSpec, str]]:
    rng = random.Random(seed)
    specs = [JobSpec.model_validate({"name": "j", "kind": "relion.refine3d", "command": ["x"], "resources": s}) for s in SHAPES]
    return [(rng.choice(specs), f"inst-{rng.randint(0, 49)}") for _ in range(n)]


def one_by_one(js: list[tuple[JobSpec, str]], views: list[SiteView]) -> None:
    for spec, inst in js:
        ranked = rank([evaluate(spec, inst, v, NOW, set()) for v in views])
        if ranked:
            best = next(v for v in views if v.name == ranked[0].site)
            reserve(best, spec, ranked[0].gpu_model)


def in_memory(n_jobs: int = 10_000, n_sites: int = 1_000, repeats: int = 3) -> dict[str, float]:
    batch_times, placed = [], 0
    for _ in range(repeats):
        views, js = sites(n_sites), jobs(n_jobs)
        t0 = time.perf_counter()
        results = place_batch(js, views, NOW)
        batch_times.append(time.perf_counter() - t0)
        placed = sum(1 for r in results if r.site)
    sample = 200
    views, js = sites(n_sites), jobs(sample)
    t0 = time.perf_counter()
    one_by_one(js, views)
    scan_per_job = (time.perf_counter() - t0) / sample
    batch = statistics.median(batch_times)
    return {
        "batch_s": batch,
        "placed": placed,
        "scan_s_extrapolated": scan_per_job * n_jobs,
        "speedup": scan_per_job * n_jobs / batch,
    }


def seed(
    url: str, n_jobs: int, n_sites: int, extra: list[tuple[JobSpec, str]] | None = None, heard_at: datetime | None = None
) -> None:
    """A migrated database with the simulated sites (registry rows and capacity) and queued jobs.

    Job ids come from a seeded generator, so two databases seeded alike hold the same jobs.
    ``heard_at``: the sites' last heartbeat, with a day's interval (so no sweep finds them silent)."""
    from hub.capacity.models import CapacityLatest, summed_columns
    from hub.db import make_engine, migrate, transaction
    from hub.jobs.models import Job
    from hub.sites.models import PartitionRow, Site, SoftwareRow

    migrate(url)
    engine = make_engine(url)
    views = sites(n_sites)
    rng = random.Random(3)
    with transaction(engine) as s:
        for v in views:
            s.add(Site(id=v.id, name=v.name, institution=v.institution, display_name=v.name, country=v.country,
                       status="active", reachability="online", contacts=[], last_heartbeat_at=heard_at,
                       heartbeat_interval_s=86_400 if heard_at else None))  # fmt: skip
        s.flush()
        for v in views:
            p = v.partitions[0]
            s.add(PartitionRow(site_id=v.id, name=p.name, node_count=p.node_count, cores_per_node=p.cores_per_node,
                               memory_gb_per_node=p.memory_gb_per_node, gpu_model=p.gpu_model,
                               gpus_per_node=p.gpus_per_node))  # fmt: skip
            s.add(SoftwareRow(site_id=v.id, name="relion", version=v.software[0][1]))
            gpus = {m: {"total": t, "free": v.gpus_free[m]} for m, t in v.gpus_total.items()}
            totals = {"cpus_total": v.cpus_total, "cpus_free": v.cpus_free, "gpus": gpus, "jobs_pending": v.jobs_pending}
            s.add(CapacityLatest(site_id=v.id, received_at=NOW, sampled_at=NOW, agent_version="b", backend="slurm",
                                 partitions=[], storage=[], totals=totals,
                                 **summed_columns(CapacityTotals.model_validate(totals))))  # fmt: skip
        for i, (spec, inst) in enumerate(jobs(n_jobs) + (extra or [])):
            s.add(Job(id=uuid.UUID(int=rng.getrandbits(128)).hex, owner="bench", institution=inst, name=spec.name,
                      kind=spec.kind.value, spec=spec.model_dump(mode="json"), created_at=NOW, updated_at=NOW,
                      priority=i % 3))  # fmt: skip
    engine.dispose()


def through_database(n_jobs: int = 10_000, n_sites: int = 1_000) -> dict[str, float]:
    """One ``place_queued`` pass on SQLite, its rows written in bulk and, as the baseline,
    one ORM object each (``bulk=False``, the previous path), on two copies of one database."""
    from hub.broker.service import place_queued
    from hub.db import make_engine, transaction

    tmp = Path(tempfile.mkdtemp())
    seed(f"sqlite:///{tmp / 'bulk.db'}", n_jobs, n_sites)
    shutil.copy(tmp / "bulk.db", tmp / "orm.db")
    out: dict[str, float] = {}
    for name, bulk in (("orm", False), ("bulk", True)):
        engine = make_engine(f"sqlite:///{tmp / name}.db")
        t0 = time.perf_counter()
        with transaction(engine) as s:
            out[f"{name}_placed"] = place_queued(s, None, NOW, bulk=bulk)
        out[f"{name}_s"] = time.perf_counter() - t0
        engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    out["pass_s"], out["placed"] = out["bulk_s"], out["bulk_placed"]
    return out


if __name__ == "__main__":
    print(in_memory())
    print(through_database())
