"""Run-time model against real RELION: real ``relion_refine`` 2D classifications (Debian's
RELION 3.1.3, CPU build) over a grid of sizes, timed wall-clock on this machine.

1. The data: a synthetic density (Gaussian blobs), projected with ``relion_project`` at
   random orientations into particle stacks of each box size, with white noise added.
2. The runs: Class2D over particles x box x classes x iterations x threads.
3. Fit and validate: the model's form (hub/estimates/model.py: s x work / cores^f, work =
   particles^a x classes^b x iterations^c x (box/100)^d x orientations) is fitted on 60 %
   of the runs and predicts the other 40 % (and, as a second check, every run left out in
   turn); reported are the median absolute error and the share within +-30 %.
   Goal (issue 12): median <= 20 %, 90 % of held-out runs within +-30 %.
4. Learning: the shipped priors (hub/estimates/priors.toml) predict every run; then this
   machine is treated as a new site whose finished runs are learned one by one
   (hub.estimates.model.estimate), and the error and the p10-p90 width on the runs not yet
   learned are reported after 0, 1, 3, 5 and 10 runs.

Wall-clock timings need a quiet machine: the load average is printed at the start and end.

    python -m bench.runtime_model [--runs 24] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from hub.estimates.model import Stat, estimate, observation
from shared.schemas.jobs import JobSpec

ANGPIX = 3.0
PARTICLES = (100, 200, 400)
BOXES = (32, 48, 64)
CLASSES = (2, 4)
ITERATIONS = (2, 4)
THREADS = (1, 2)


@dataclass(frozen=True)
class Run:
    particles: int
    box: int
    classes: int
    iterations: int
    threads: int
    seconds: float = 0.0

    def spec(self) -> JobSpec:
        return JobSpec.model_validate({
            "name": "bench", "kind": "relion.class2d", "parameters": {"K": self.classes, "iter": self.iterations},
            "resources": {"cpus": self.threads, "walltime_s": 30 * 86_400},
            "workload": {"particles": self.particles, "box_px": self.box},
        })  # fmt: skip


def make_stack(root: Path, box: int, particles: int, seed: int = 0) -> Path:
    """A particles STAR file (with its optics table) and stack: projections of a blob density, with noise."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:box, :box, :box] - box / 2
    vol = np.zeros((box, box, box), np.float32)
    for _ in range(12):
        c, s = rng.normal(0, box / 8, 3), box / 14
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s)).astype(np.float32)
    with mrcfile.new(root / "map.mrc", overwrite=True) as m:
        m.set_data(vol)
        m.voxel_size = ANGPIX
    subprocess.run(["relion_project", "--i", "map.mrc", "--o", "proj", "--nr_uniform", str(particles), "--angpix", str(ANGPIX)],
                   cwd=root, check=True, capture_output=True)  # fmt: skip
    with mrcfile.open(root / "proj.mrcs", mode="r+") as m:
        d = m.data.astype(np.float32)
        m.set_data(d + rng.normal(0, float(d.std()) * 3, d.shape).astype(np.float32))
    return root / "proj.star"


def subset(star: Path, n: int, out: Path) -> Path:
    """The STAR file with its optics table and the first ``n`` particles."""
    lines = star.read_text().splitlines()
    start = lines.index("data_particles")
    head, rows = lines[:start], lines[start:]
    body = [ln for ln in rows if "@" in ln]
    labels = [ln for ln in rows if "@" not in ln]
    out.write_text("\n".join(head + labels + body[:n]) + "\n")
    return out


def class2d(star: Path, run: Run, workdir: Path) -> float:
    out = workdir / f"n{run.particles}_b{run.box}_k{run.classes}_i{run.iterations}_j{run.threads}"
    out.mkdir(parents=True)
    cmd = ["relion_refine", "--i", star.name, "--o", str(out / "run"), "--K", str(run.classes), "--iter", str(run.iterations),
           "--tau2_fudge", "2", "--particle_diameter", str(int(run.box * ANGPIX * 0.8)), "--psi_step", "6",
           "--offset_range", "5", "--offset_step", "2", "--j", str(run.threads), "--zero_mask", "--norm", "--scale",
           "--dont_combine_weights_via_disc", "--pool", "30"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=star.parent)  # image paths are relative to the STAR's dir
    if done.returncode != 0:
        raise SystemExit(f"relion_refine failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - t0


Params = tuple[float, float, float, float, float, float]


def _features(r: Run) -> list[float]:
    return [1.0, math.log(r.particles), math.log(r.classes), math.log(r.iterations), math.log(r.box / 100),
            math.log(r.threads)]  # fmt: skip


def fit(runs: list[Run]) -> Params:
    """The model's power law, least squares on logs: (ln seconds per unit, particles, classes,
    iterations, box and cores exponents); work units as in hub/estimates/model.py (60 in-plane angles)."""
    x = np.array([_features(r) for r in runs])
    y = np.log([r.seconds for r in runs])
    c, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(c[0] - math.log(60 / 1e6)), float(c[1]), float(c[2]), float(c[3]), float(c[4]), float(-c[5])


def predict(params: Params, r: Run) -> float:
    ln_s, a, b, c, d, f = params
    return math.exp(ln_s + math.log(60 / 1e6) + a * math.log(r.particles) + b * math.log(r.classes)
                    + c * math.log(r.iterations) + d * math.log(r.box / 100) - f * math.log(r.threads))  # fmt: skip


def describe(p: Params) -> str:
    return (f"{math.exp(p[0]):.1f} s per unit, particles^{p[1]:.2f} x classes^{p[2]:.2f} x iterations^{p[3]:.2f} x "
            f"box^{p[4]:.2f} / cores^{p[5]:.2f}")  # fmt: skip


def errors(params: Params, runs: list[Run]) -> list[float]:
    return [abs(predict(params, r) - r.seconds) / r.seconds for r in runs]


def summary(errs: list[float]) -> str:
    within = sum(e <= 0.30 for e in errs) / len(errs)
    return f"median {statistics.median(errs):.0%}, worst {max(errs):.0%}, within ±30 %: {within:.0%} ({len(errs)} runs)"


def learning_curve(runs: list[Run], slower: float = 1.0) -> list[str]:
    """A new site running these jobs (``slower`` times as long as here): the shipped priors,
    then its runs learned one by one, predicting the ones not yet learned."""
    runs = [Run(r.particles, r.box, r.classes, r.iterations, r.threads, r.seconds * slower) for r in runs]
    rows = []
    for k in (0, 1, 3, 5, 10):
        if k >= len(runs):
            break
        stat = Stat()
        for r in runs[:k]:
            stat = stat.add(observation(r.spec(), None, r.seconds))
        rest = runs[k:]
        ests = [estimate(r.spec(), None, stat) for r in rest]
        errs = [abs(e.p50 - r.seconds) / r.seconds for e, r in zip(ests, rest, strict=True)]
        inside = sum(e.p10 <= r.seconds <= e.p90 for e, r in zip(ests, rest, strict=True)) / len(rest)
        width = statistics.median(e.p90 / e.p10 for e in ests)
        rows.append(f"| {slower:g}x | {k} | {statistics.median(errs):.0%} | {max(errs):.0%} | {width:.2f}x | {inside:.0%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24, help="Runs drawn from the grid (all 72 with --runs 72)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="Append the markdown section to this file")
    parser.add_argument("--json", type=Path, default=None, help="Write the timed runs here")
    parser.add_argument("--timed", type=Path, default=None, help="Fit and report runs timed before (a --json file)")
    args = parser.parse_args()
    if args.timed:
        runs = [Run(**r) for r in json.loads(args.timed.read_text())]
        report(runs, args, load0=float("nan"), load1=float("nan"), total=sum(r.seconds for r in runs))
        return
    if shutil.which("relion_refine") is None:
        raise SystemExit("relion_refine is not on PATH: apt-get install relion (make test installs it as root)")
    load0 = os.getloadavg()[0]
    grid = list(itertools.product(PARTICLES, BOXES, CLASSES, ITERATIONS, THREADS))
    rng = random.Random(args.seed)
    chosen = rng.sample(grid, min(args.runs, len(grid)))
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-runtime-"))
    try:
        stars = {b: make_stack(tmp / f"data{b}", b, max(PARTICLES), seed=b) for b in BOXES}
        runs = []
        started = time.monotonic()
        for i, (n, b, k, it, j) in enumerate(chosen):
            star = subset(stars[b], n, tmp / f"data{b}" / f"p{n}.star")
            r = Run(n, b, k, it, j)
            seconds = class2d(star, r, tmp / "runs")
            runs.append(Run(n, b, k, it, j, seconds))
            print(f"[{i + 1}/{len(chosen)}] {n} particles, box {b}, K={k}, {it} iterations, --j {j}: {seconds:.1f} s", flush=True)
        total = time.monotonic() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    report(runs, args, load0, load1, total)


def report(runs: list[Run], args: argparse.Namespace, load0: float, load1: float, total: float) -> None:
    rng = random.Random(args.seed)
    order = runs[:]
    rng.shuffle(order)
    cut = int(len(order) * 0.6)
    train, test = order[:cut], order[cut:]
    params = fit(train)
    held_out = errors(params, test)
    loo = [errors(fit(runs[:i] + runs[i + 1 :]), [runs[i]])[0] for i in range(len(runs))]
    full = fit(runs)
    lines = [
        "## Run-time model on real RELION (issue 12)",
        "",
        f"`python -m bench.runtime_model --runs {args.runs}`: {len(runs)} real `relion_refine` Class2D runs (Debian RELION "
        f"3.1.3, CPU), {PARTICLES} particles x box {BOXES} px x K {CLASSES} x {ITERATIONS} iterations x `--j` {THREADS} "
        f"(drawn from the grid, seed {args.seed}); {total:.0f} s of runs; load average {load0:.1f} at the start, "
        f"{load1:.1f} at the end; {os.cpu_count()} CPUs.",
        "",
        f"- Fitted on 60 % ({len(train)} runs): {describe(params)}.",
        f"- **Held-out 40 % ({len(test)} runs): {summary(held_out)}.**",
        f"- Each run left out in turn: {summary(loo)}.",
        f"- Fit on all runs (the numbers in hub/estimates/priors.toml): {describe(full)}.",
        "",
        "Learning: a new site's runs (in random order) learned one by one by the hub's model (`hub.estimates.model`, "
        "starting from the shipped priors in hub/estimates/priors.toml), predicting the runs not yet learned. `1x` is "
        "this machine; `2.5x` a site where the same runs take 2.5 times as long (these timings x 2.5: what a slower "
        "CPU or file system does, which the priors cannot know):",
        "",
        "| site | runs learned | median error | worst | p90/p10 | inside p10-p90 |",
        "|---|---|---|---|---|---|",
        *learning_curve(order),
        *learning_curve(order, slower=2.5),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write("\n" + text)
    if math.isnan(statistics.median(held_out)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
