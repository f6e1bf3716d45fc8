"""The batch placer at scale, this checkout against another (e.g. main before this change) in
the same run.

In memory, ``place_batch`` over simulated sites (bench/broker.py's) for two queues:

- six resource shapes, no inputs (jobs alike share one search);
- every job with its own input dataset (0.1-2,000 GB, at one site) and its own particle
  count: no two jobs alike.

Through the database: one real ``place_queued`` pass on SQLite over 10,000 queued jobs of
the six shapes and 1,000 sites, on two copies of one seeded database.

The other checkout runs in its own process (``DIR/.venv/bin/python`` with ``PYTHONPATH=DIR``).
Where it would take minutes (own inputs), it places the first jobs of the queue and the
time is scaled to the whole queue, as the table says; the sites both chose for those jobs
are compared.

    python -m bench.placer --before /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Batch placer and submission speed (issues 10 and 12)"


def own_inputs(n_jobs: int, views: list[Any], seed: int = 5) -> list[tuple[Any, str]]:
    """Jobs each with their own dataset (held at one site) and particle count; the views learn where the data is."""
    from hub.broker.rules import Network
    from shared.schemas.jobs import JobSpec

    rng = random.Random(seed)
    net = Network()
    for v in views:
        v.network = net
    jobs = []
    for j in range(n_jobs):
        dataset = f"ds-{j}"
        holder = rng.choice(views)
        net.dataset_bytes[dataset] = int(10 ** rng.uniform(8, 12.3))
        net.holders[dataset] = {holder.id}
        holder.datasets.add(dataset)
        gpus = rng.choice([0, 0, 1, 2])
        spec = JobSpec.model_validate({
            "name": f"j{j}", "kind": rng.choice(["relion.class2d", "relion.class3d"]), "command": ["x"],
            "inputs": [{"dataset": dataset}], "workload": {"particles": rng.randint(10_000, 1_000_000), "box_px": 256},
            "parameters": {"K": rng.choice([10, 50])},
            "resources": {"cpus": rng.choice([4, 8, 16]), "gpus": gpus, "walltime_s": 7 * 86_400},
        })  # fmt: skip
        jobs.append((spec, f"inst-{rng.randint(0, 49)}"))
    return jobs


def measure(queue: str, n_sites: int, n_jobs: int) -> dict[str, Any]:
    """Place the queue's first ``n_jobs`` in memory with this process's ``hub``: seconds and chosen sites."""
    from bench.broker import NOW, jobs, sites
    from hub.broker.batch import place_batch

    views = sites(n_sites)
    queued = own_inputs(10_000, views)[:n_jobs] if queue == "own" else jobs(10_000)[:n_jobs]
    t0, c0 = time.perf_counter(), time.process_time()
    results = place_batch(queued, views, NOW)
    # CPU seconds beside wall seconds: on a machine shared with other work, the wall clock mostly measures the others.
    return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "sites": [r.site.name if r.site else None for r in results]}  # fmt: skip


def submissions(n_sites: int, repeats: int = 5) -> dict[str, float]:
    """One submission's decision (median seconds): scoring every site (``decide_by_scan``, the
    path before this change and still the reference) against the search with the checks for
    good kept between submissions, as a hub process keeps them (``decide_by_search``)."""
    import statistics

    from bench.broker import NOW, sites
    from hub.broker.search import Fixed
    from hub.broker.service import Decision, decide_by_scan, decide_by_search
    from shared.schemas.jobs import JobSpec

    views = sorted(sites(n_sites), key=lambda v: v.name)
    spec = JobSpec.model_validate({"name": "b", "kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}})
    fixed: dict[str, Fixed] = {}
    decide_by_search(spec, "inst-1", views, NOW, fixed)  # the first submission after a reload builds the checks

    def scan() -> Decision:
        return decide_by_scan(spec, "inst-1", views, NOW, set(), set())

    def search() -> Decision:
        return decide_by_search(spec, "inst-1", views, NOW, fixed)

    out: dict[str, list[float]] = {"scan": [], "search": []}
    for _ in range(repeats):
        for name, decide in (("scan", scan), ("search", search)):
            t0 = time.perf_counter()
            decide()
            out[name].append(time.perf_counter() - t0)
    assert scan() == search(), "the search records what scoring every site records"
    return {name: statistics.median(xs) for name, xs in out.items()}


def through_database(path: str) -> float:
    """Seconds for one ``place_queued`` pass on the SQLite database at ``path``."""
    from bench.broker import NOW
    from hub.broker.service import place_queued
    from hub.db import make_engine, transaction

    engine = make_engine(f"sqlite:///{path}")
    t0 = time.perf_counter()
    with transaction(engine) as s:
        place_queued(s, None, NOW)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


def other(checkout: Path, *args: str) -> Any:
    """Run this file's ``--worker`` in ``checkout``'s code and environment."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), __file__, "--worker", *args],
                         env=env, cwd=checkout, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def run(before: Path | None, sizes: list[int], n_jobs: int, slices: dict[int, int]) -> list[dict[str, Any]]:
    rows = []
    for n_sites in sizes:
        for queue in ("shapes", "own"):
            after = measure(queue, n_sites, n_jobs)
            row: dict[str, Any] = {"queue": queue, "sites": n_sites, "jobs": n_jobs, "after_s": after["s"],
                                   "after_cpu_s": after["cpu_s"], "placed": sum(1 for s in after["sites"] if s)}  # fmt: skip
            if before is not None:
                part = n_jobs if queue == "shapes" else slices[n_sites]
                b = other(before, "memory", queue, str(n_sites), str(part))
                row.update(before_jobs=part, before_s=b["s"] * n_jobs / part, before_cpu_s=b.get("cpu_s", 0.0) * n_jobs / part)
                row["same"] = sum(1 for x, y in zip(b["sites"], after["sites"], strict=False) if x == y)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return rows


def database(before: Path | None, n_jobs: int, n_sites: int) -> dict[str, float]:
    from bench.broker import seed

    tmp = Path(tempfile.mkdtemp())
    try:
        seed(f"sqlite:///{tmp / 'after.db'}", n_jobs, n_sites)
        shutil.copy(tmp / "after.db", tmp / "before.db")
        out = {"after_s": through_database(str(tmp / "after.db"))}
        if before is not None:
            out["before_s"] = other(before, "database", str(tmp / "before.db"))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


Row = dict[str, Any]


def section(rows: list[Row], db: dict[str, float], subs: dict[int, dict[str, float]], args: argparse.Namespace) -> str:
    submitted = [f"| {n:,} | {s['scan'] * 1000:.1f} ms | {s['search'] * 1000:.1f} ms | {s['scan'] / s['search']:.0f}x |"
                 for n, s in subs.items()]  # fmt: skip
    lines = []
    for r in rows:
        queue = "six shapes, no inputs" if r["queue"] == "shapes" else "each job its own inputs and sizes"
        if "before_s" in r:
            scaled = "" if r["before_jobs"] == r["jobs"] else f" (first {r['before_jobs']:,} jobs, scaled)"
            before = f"{r['before_s']:.2f} s{scaled}"
            speedup = r["before_s"] / r["after_s"]
            ratio = f"{speedup:.1f}x" if speedup < 10 else f"{speedup:.0f}x"
            same = f"{r['same']:,} of {r['before_jobs']:,}"
        else:
            before = ratio = same = "—"
        lines.append(f"| {r['jobs']:,} x {r['sites']:,} | {queue} | {before} | {r['after_s']:.2f} s | {ratio} | "
                     f"{r['placed']:,} | {same} |")  # fmt: skip
    db_before = f"{db['before_s']:.2f} s" if "before_s" in db else "—"
    db_ratio = f"{db['before_s'] / db['after_s']:.1f}x" if "before_s" in db else "—"
    return f"""{SECTION}

Command: `python -m bench.placer --before {args.before or "DIR"}{" --whole" if args.whole else ""}` (`make bench` runs it
without a baseline). Machine: x86_64, 2 CPU cores, load average {os.getloadavg()[0]:.1f} at the end; run
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}. Compare the ratios, measured in the same run. "Before"
is the checkout given, run in its own process.

| jobs x sites | queue | before | after | speed-up | placed | same site as before |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}
| 10,000 x 1,000 through SQLite (`place_queued`) | six shapes | {db_before} | {db["after_s"]:.2f} s | {db_ratio} | | |

One submission's decision, in memory (`hub/broker/service.py`; the same process, median of 5):
scoring every site (the path before, kept as the reference) against the search with the checks for good kept between submissions.

| sites | every site scored | search | speed-up |
|---|---|---|---|
{chr(10).join(submitted)}

Reading: jobs alike (six shapes) cost what they cost before: both placers score about one
site per job. Jobs each with their own inputs and sizes no longer score every site: the
search bounds every site with a few vector operations and scores a handful exactly. The
"same site" column compares the placements of the jobs both placed; that the two agree on
every job, verdicts included, is what `tests/hub/test_placer_equivalence.py` checks on
random networks. What stays linear in the sites: the pass's view of the sites (arrays built
once per pass, per submission) and, in a submission, the kept site views' refresh
(hub/broker/cache.py); the database pass is dominated by reading the queue and writing
10,000 attempts and decisions, not by placement.

"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # inside the other checkout
        what, *rest = sys.argv[2:]
        if what == "memory":
            print(json.dumps(measure(rest[0], int(rest[1]), int(rest[2]))))
        else:
            print(json.dumps(through_database(rest[0])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout to measure as the baseline, with its own .venv")
    parser.add_argument("--sites", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--whole", action="store_true", help="the baseline places whole queues (one with the search)")
    args = parser.parse_args()
    slices = {n: args.jobs for n in args.sites} if args.whole else {1_000: 200, 10_000: 20}
    rows = run(args.before, args.sites, args.jobs, slices)
    db = database(args.before, args.jobs, 1_000)
    subs = {n: submissions(n) for n in args.sites}
    text = section(rows, db, subs, args)
    from bench.docs import write_section  # here: a --worker may run in a checkout without it

    write_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
