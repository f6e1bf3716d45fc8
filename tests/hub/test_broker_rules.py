"""The broker's rules in isolation: time windows, CUDA architectures, ranking, and the batch
placer choosing exactly what one-by-one placement chooses."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hub.broker.batch import place_batch
from hub.broker.rules import PartitionView, SiteView, arch_at_least, evaluate, in_window, rank, reserve
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SitePolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday, 21:00 in Tokyo


def test_time_windows() -> None:
    nights = SitePolicy.model_validate(
        {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "19:00", "end": "07:00"}], "timezone": "Asia/Tokyo"}
    )
    assert in_window(nights, NOW), "21:00 on a Tuesday in Tokyo"
    assert not in_window(nights, NOW.replace(hour=3)), "12:00 in Tokyo"
    assert in_window(nights, NOW.replace(day=25, hour=21)), "06:00 Wednesday: still Tuesday's night"
    weekend = SitePolicy.model_validate({"windows": [{"days": ["sat", "sun"], "start": "00:00", "end": "24:00"}]})
    assert not in_window(weekend, NOW) and in_window(weekend, NOW.replace(day=29))
    assert in_window(SitePolicy(), NOW), "no windows: always"


def test_cuda_arch() -> None:
    assert arch_at_least("h100", "8.0") and arch_at_least("a100", "8.0") and not arch_at_least("v100", "8.0")
    assert not arch_at_least("unknown-gpu", "1.0")


def _site(i: int, rng: random.Random) -> SiteView:
    gpu = rng.choice([None, "a100", "h100", "v100"])
    nodes, cores = rng.randint(1, 50), rng.choice([16, 32, 64, 128])
    v = SiteView(
        id=i,
        name=f"site-{i:04d}",
        institution=f"inst-{i % 7}",
        country=rng.choice(["JP", "DE", "US"]),
        status="active",
        reachability=rng.choice(["online"] * 9 + ["unreachable"]),
        partitions=[PartitionView("p", nodes, cores, 512, gpu, 4 if gpu else 0)],
        software=[("relion", rng.choice(["4.0", "5.0"]), None)],
        policy=SitePolicy(cpu_share=rng.choice([1.0, 0.5]), allowed_institutions=None if i % 5 else ["inst-1"]),
        has_snapshot=True,
        cpus_total=nodes * cores,
        jobs_pending=rng.randint(0, 30),
        reliability=rng.choice([1.0, 0.9, 0.5]),
    )
    v.cpus_free = rng.randint(0, v.cpus_total)
    if gpu:
        v.gpus_total = {gpu: nodes * 4}
        v.gpus_free = {gpu: rng.randint(0, nodes * 4)}
    return v


def _jobs(n: int, rng: random.Random) -> list[tuple[JobSpec, str]]:
    shapes = [
        {"cpus": 4},
        {"cpus": 16, "memory_gb": 64},
        {"cpus": 2, "gpus": 1, "gpu_model": "a100"},
        {"cpus": 8, "gpus": 2, "min_cuda_arch": "8.0"},
        {"cpus": 64, "mpi_ranks": 8, "threads_per_rank": 8},
    ]
    out = []
    for i in range(n):
        spec = JobSpec.model_validate(
            {
                "name": f"j{i}",
                "kind": rng.choice(["generic.command", "relion.refine3d"]),
                "command": ["x"],
                "resources": rng.choice(shapes),
                "placement": rng.choice([{}, {"countries": ["JP"]}, {"excluded_sites": ["site-0003"]}]),
            }
        )
        out.append((spec, f"inst-{rng.randint(0, 6)}"))
    return out


def test_batch_placement_matches_one_by_one() -> None:
    rng = random.Random(7)
    sites_a = [_site(i, random.Random(i)) for i in range(60)]
    sites_b = [_site(i, random.Random(i)) for i in range(60)]
    jobs = _jobs(3000, rng)
    slow = []
    for spec, inst in jobs:
        ranked = rank([evaluate(spec, inst, v, NOW, set()) for v in sites_a])
        if ranked:
            best = next(v for v in sites_a if v.name == ranked[0].site)
            reserve(best, spec, ranked[0].gpu_model)
            slow.append(best.name)
        else:
            slow.append(None)
    fast = [r.site.name if r.site else None for r in place_batch(jobs, sites_b, NOW)]
    assert fast == slow
    assert 50 < sum(1 for s in fast if s) < 3000, "the scenario places some jobs and leaves others waiting"


def test_waiting_reasons_are_grouped() -> None:
    sites = [_site(i, random.Random(i)) for i in range(30)]
    [result] = place_batch(
        [
            (
                JobSpec.model_validate(
                    {
                        "name": "x",
                        "kind": "generic.command",
                        "command": ["x"],
                        "resources": {"cpus": 1, "gpus": 1, "gpu_model": "b200"},
                    }
                ),
                "inst-1",
            )
        ],
        sites,
        NOW,
    )
    assert result.site is None and result.never == {"has no b200 GPUs": [s.name for s in sites]}


def test_images_match_a_sites_patterns_and_the_verdict_names_its_runtimes() -> None:
    """A site's agent reports the images it runs as patterns (``image:<pattern>``) beside
    the container runtimes it found; a declared exact name still counts."""
    rng = random.Random(1)
    podman, bare = _site(1, rng), _site(2, rng)
    podman.software = [("podman", "4.3.1", None), ("image:docker.io/library/python:3.*", "podman", None)]
    bare.software = [("image:ubuntu:24.04", "host", None)]

    def spec_for(image: str) -> JobSpec:
        return JobSpec.model_validate({"name": "t", "kind": "generic.command", "command": ["x"],
                                       "software": [{"name": f"image:{image}"}]})  # fmt: skip

    spec = spec_for("docker.io/library/python:3.11-slim")
    assert not evaluate(spec, "inst-1", podman, NOW, set()).never
    assert evaluate(spec, "inst-1", bare, NOW, set()).reasons == [
        "does not offer image:docker.io/library/python:3.11-slim (no container runtime; not in its allow-list of images)"
    ]
    other = spec_for("ubuntu:24.04")
    assert not evaluate(other, "inst-1", bare, NOW, set()).never
    assert evaluate(other, "inst-1", podman, NOW, set()).reasons == [
        "does not offer image:ubuntu:24.04 (container runtime podman 4.3.1; not in its allow-list of images)"
    ]
