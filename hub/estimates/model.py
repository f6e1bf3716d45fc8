"""The run-time model: a prior from what the job is (RELION kinds: particles, box size,
classes, iterations, angular sampling; the site's CPUs or GPUs) as a power law fitted on
real RELION runs, corrected per site and job kind by the runs that site has finished.

Pure functions; the numbers they start from are in priors.toml, each with its source.

Learning: each finished run gives r = ln(actual / prior). A site's bias for a kind is
estimated from its runs with a normal prior N(0, prior_sigma^2) (shrinkage: one odd run
moves the estimate little); the run-to-run scatter is measured once three runs are in.
The estimate is log-normal: p50 = prior x e^bias, p10/p90 = p50 x e^(-/+ 1.2816 sd) with
sd^2 = the bias's own uncertainty + the scatter, so the interval narrows as runs come in,
down to the scatter. No estimate exceeds the job's walltime: the site stops it there.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from shared.schemas.jobs import JobSpec

Z90 = 1.2816  # the standard normal's 90th percentile
MODELLED = ("relion.class2d", "relion.class3d", "relion.refine3d")


@cache
def priors() -> dict[str, Any]:
    with (Path(__file__).parent / "priors.toml").open("rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class Stat:
    """What a site's finished runs of one kind said: count, mean and sum of squared deviations of r."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, r: float) -> Stat:
        """Welford's update with one more run."""
        n = self.n + 1
        delta = r - self.mean
        mean = self.mean + delta / n
        return Stat(n, mean, self.m2 + delta * (r - mean))


@dataclass(frozen=True)
class Estimate:
    p10: float
    p50: float
    p90: float
    runs: int  # finished runs of this kind at this site it learned from
    basis: str  # what the prior was built from, in words

    @cached_property
    def described(self) -> str:
        """``describe()``, kept: an estimate shared by many verdicts is described once."""
        return self.describe()

    @cached_property
    def rounded(self) -> tuple[float, float, float, float]:
        """(p10, p50, p90 to 0.1 s, runs as a float): as a verdict's parts record them, kept like ``described``."""
        return round(self.p10, 1), round(self.p50, 1), round(self.p90, 1), float(self.runs)

    def describe(self) -> str:
        learned = f"learned from {self.runs} run{'s' if self.runs != 1 else ''} here" if self.runs else "no runs here yet"
        return f"{duration(self.p50)} run (p10 {duration(self.p10)}, p90 {duration(self.p90)}; {self.basis}; {learned})"


def duration(seconds: float) -> str:
    """E.g. '45 s', '12 m', '2 h 05 m': how explanations write a span of time."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(seconds, 0):.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} m" if minutes >= 60 else f"{minutes} m"


def _number(params: dict[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) and out > 0 else default


def work_units(spec: JobSpec) -> tuple[float | None, str]:
    """(RELION work units, what they were made of) or (None, why there is no size model)."""
    kind = spec.kind.value
    if kind not in MODELLED:
        return None, f"no size model for {kind}"
    w = spec.workload
    if w.particles is None or w.box_px is None:
        return None, "particle count or box size unknown"
    p = priors()["relion"]
    params = dict(spec.parameters)
    classes = 1.0 if kind == "relion.refine3d" else _number(params, "K", 1)
    iterations = _number(params, "iter", p["default_iterations"][kind])
    if kind == "relion.class2d":
        orientations = 360 / _number(params, "psi_step", p["psi_step_2d"])
    else:
        order = _number(params, "healpix_order", p["healpix_order_3d"])
        orientations = 12 * 4**order * 360 / _number(params, "psi_step", p["psi_step_3d"])
    units = (w.particles ** p["particles_exponent"] * classes ** p["classes_exponent"]
             * iterations ** p["iterations_exponent"] * (w.box_px / 100) ** p["box_exponent"] * orientations / 1e6)  # fmt: skip
    return units, f"{w.particles:,} particles x {classes:g} classes x {iterations:g} iterations, box {w.box_px} px"


@cache
def _gpu_seconds_per_unit() -> float:
    """From the priors alone (kept: it validates a spec, and every GPU estimate asks for it)."""
    g = priors()["gpu"]
    a = g["anchor"]
    spec = JobSpec.model_validate({
        "name": "anchor", "kind": a["kind"], "parameters": {"K": a["classes"], "iter": a["iterations"]},
        "workload": {"particles": a["particles"], "box_px": a["box_px"]},
    })  # fmt: skip
    units, _ = work_units(spec)
    assert units
    return float(a["minutes"] * 60 - g["overhead_s"]) / units


def prior_seconds(spec: JobSpec, gpu_model: str | None, work: tuple[float | None, str] | None = None) -> tuple[float, str]:
    """(the prior's run time in seconds, its basis in words) for the job on ``gpu_model`` GPUs or on CPUs.
    ``work``: the job's ``work_units``, from a caller that asks for several models."""
    units, detail = work_units(spec) if work is None else work
    r = spec.resources
    if units is None:
        fraction = priors()["learning"]["walltime_fraction"]
        return r.walltime_s * fraction, f"{detail}: {fraction:.0%} of walltime"
    if r.gpus and gpu_model:
        g = priors()["gpu"]
        rel = g["relative"].get(gpu_model)
        speed = (rel or 1.0) * r.gpus ** g["gpus_exponent"]
        known = "" if rel else f", {gpu_model} speed unknown (taken as a V100)"
        return g["overhead_s"] + units * _gpu_seconds_per_unit() / speed, f"{detail} on {r.gpus} {gpu_model}{known}"
    c = priors()["cpu"]
    return c["overhead_s"] + units * c["seconds_per_unit"] / r.cpus ** c["cores_exponent"], f"{detail} on {r.cpus} CPUs"


def learned(stat: Stat | None) -> tuple[float, float]:
    """(the site's bias for the kind: ln(p50 / prior), the sd of a run's ln(time)) from its finished runs.
    Every estimate at the site is the prior x e^bias, so the batch placer bounds run times with it."""
    learn = priors()["learning"]
    s = stat or Stat()
    noise2 = s.m2 / (s.n - 1) if s.n >= 3 else learn["default_noise_sigma"] ** 2
    noise2 = max(noise2, 0.05**2)
    prior2 = learn["prior_sigma"] ** 2
    post_var = 1 / (s.n / noise2 + 1 / prior2)
    return post_var * (s.n * s.mean / noise2), math.sqrt(post_var + noise2)


def estimate(spec: JobSpec, gpu_model: str | None, stat: Stat | None) -> Estimate:
    """The job's run time at a site whose finished runs of this kind gave ``stat``."""
    prior, basis = prior_seconds(spec, gpu_model)
    bias, sd = learned(stat)
    cap = float(spec.resources.walltime_s)
    p50 = prior * math.exp(bias)
    runs = stat.n if stat else 0
    return Estimate(min(p50 * math.exp(-Z90 * sd), cap), min(p50, cap), min(p50 * math.exp(Z90 * sd), cap), runs, basis)


def observation(spec: JobSpec, gpu_model: str | None, wall_s: float) -> float:
    """r for one finished run: ln(actual / prior)."""
    prior, _ = prior_seconds(spec, gpu_model)
    return math.log(max(wall_s, 1.0) / max(prior, 1.0))
