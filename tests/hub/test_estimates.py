"""Run-time estimates: the RELION work model and its cited anchor, intervals that narrow as a
site's runs are learned, the walltime cap, and the hub learning from finished runs and
reading particle counts from input datasets."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.estimates.model import Stat, estimate, observation, prior_seconds, priors, work_units
from shared.schemas.jobs import JobSpec, Workload
from tests.helpers import Hub, running_hub
from tests.hub.test_costs import _run
from tests.hub.test_jobs import CPU_SITE, add_site, spec, submit


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, max_attempts=2) as h:
        yield h


def relion(kind: str = "relion.class2d", particles: int = 10_000, box: int = 128, cpus: int = 8, gpus: int = 0,
           gpu_model: str | None = None, walltime_s: int = 30 * 86_400, **params: Any) -> JobSpec:  # fmt: skip
    resources: dict[str, Any] = {"cpus": cpus, "gpus": gpus, "walltime_s": walltime_s}
    if gpu_model:
        resources["gpu_model"] = gpu_model
    return JobSpec.model_validate({"name": "j", "kind": kind, "parameters": params, "resources": resources,
                                   "workload": {"particles": particles, "box_px": box}})  # fmt: skip


def test_work_grows_with_particles_classes_iterations_and_box_as_fitted() -> None:
    e = priors()["relion"]
    base, _ = work_units(relion(K=10, iter=25))
    assert base is not None
    assert work_units(relion(K=20, iter=25))[0] == pytest.approx(2 ** e["classes_exponent"] * base)
    assert work_units(relion(K=10, iter=50))[0] == pytest.approx(2 ** e["iterations_exponent"] * base)
    assert work_units(relion(particles=20_000, K=10, iter=25))[0] == pytest.approx(2 ** e["particles_exponent"] * base)
    assert work_units(relion(box=256, K=10, iter=25))[0] == pytest.approx(2 ** e["box_exponent"] * base)
    assert work_units(relion(K=10, iter=25, psi_step=3))[0] == pytest.approx(2 * base), "twice the in-plane angles"
    finer, _ = work_units(relion(kind="relion.class3d", K=10, iter=25, healpix_order=3))
    coarse, _ = work_units(relion(kind="relion.class3d", K=10, iter=25))
    assert finer == pytest.approx(4 * coarse), "one HEALPix order more: 4x the directions"
    unsized = relion().model_copy(update={"workload": Workload()})
    assert work_units(unsized) == (None, "particle count or box size unknown")


def test_the_gpu_prior_reproduces_its_published_anchor() -> None:
    anchor = relion(kind="relion.class3d", particles=105_247, box=360, gpus=1, gpu_model="a10g", K=6, iter=25)
    seconds, basis = prior_seconds(anchor, "a10g")
    assert seconds / 60 == pytest.approx(197.85, rel=1e-6)
    assert basis == "105,247 particles x 6 classes x 25 iterations, box 360 px on 1 a10g"
    four = anchor.model_copy(update={"resources": anchor.resources.model_copy(update={"gpus": 4})})
    assert prior_seconds(four, "a10g")[0] / 60 == pytest.approx(197.85 / 4**0.52, rel=0.02), "2.07x on 4 GPUs"
    faster = prior_seconds(anchor, "h100")[0]
    assert faster < seconds
    unknown, words = prior_seconds(anchor, "mystery-gpu")
    assert unknown == seconds and "mystery-gpu speed unknown" in words


def test_learning_moves_the_estimate_to_the_site_and_narrows_the_interval() -> None:
    job = relion(K=10, iter=25)
    prior = estimate(job, None, None)
    assert prior.p10 < prior.p50 < prior.p90 and prior.runs == 0
    truth = prior.p50 * 3  # this site is three times slower than the benchmark says
    stat, widths, errors = Stat(), [], []
    for i in range(12):
        actual = truth * math.exp(0.1 * math.sin(i))  # some run-to-run scatter
        stat = stat.add(observation(job, None, actual))
        e = estimate(job, None, stat)
        widths.append(e.p90 / e.p10)
        errors.append(abs(e.p50 - truth) / truth)
    assert widths[-1] < widths[0] < prior.p90 / prior.p10, "the interval narrows as runs come in"
    assert errors[-1] < 0.1 and errors[-1] < errors[0], "the estimate converges on what the site measures"
    e = estimate(job, None, stat)
    assert e.p10 < truth < e.p90 and e.runs == 12


def test_no_estimate_passes_the_walltime_and_unknown_sizes_fall_back_to_it() -> None:
    short = relion(K=50, iter=25, walltime_s=3600)  # the model says ~1 h 27 m (p10 33 m)
    e = estimate(short, None, None)
    assert e.p90 == 3600 and e.p50 == 3600 and e.p10 < 3600
    generic = JobSpec.model_validate(
        {"name": "g", "kind": "generic.command", "command": ["x"], "resources": {"walltime_s": 7200}}
    )
    g = estimate(generic, None, None)
    assert g.p50 == 3600 and "50% of walltime" in g.basis


def test_the_hub_learns_from_finished_runs_and_says_so(jhub: Hub, tmp_path: Path) -> None:
    site = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    first = submit(jhub, me, spec(resources={"cpus": 8, "walltime_s": 7200})).json()
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{first['id']}/placement").json()
    assert "finishes in ~1 h 00 m: no inputs, no wait, 1 h 00 m run (p10 23 m, p90 2 h 00 m; " in why["explanation"]
    assert "no runs here yet" in why["explanation"], why["explanation"]
    _run(site, hours=0.25)
    second = submit(jhub, me, spec(resources={"cpus": 8, "walltime_s": 7200})).json()
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{second['id']}/placement").json()
    assert "learned from 1 run here" in why["explanation"], why["explanation"]
    p50 = int(why["explanation"].split("no wait, ", 1)[1].split(" m run (", 1)[0])
    assert 15 < p50 < 25, "one 15-minute run pulls the 60-minute prior most of the way, not all of it"


def test_particle_counts_come_from_the_input_dataset(jhub: Hub, tmp_path: Path) -> None:
    from tests.hub.test_datasets import dataset_body, make_dataset_dir, register

    add_site(jhub, tmp_path, "alpha", CPU_SITE, software=[{"name": "relion", "version": "3.1.3"}])
    agent = jhub.enroll_agent("alpha", tmp_path / "registrar")
    root = make_dataset_dir(tmp_path / "ds")
    stacks = [{"category": "particle_stacks", "format": "mrcs", "count": 4, "width": 200, "height": 200,
               "pixel_size_a": 1.1, "particles": 48_000}]  # fmt: skip
    r = register(jhub, agent, dataset_body(root, image_sets=stacks, visibility="network"))
    assert r.status_code == 201, r.text
    me = jhub.account("researcher", institution="kek")
    inputs = [{"dataset": r.json()["id"]}]
    job = submit(jhub, me, spec(kind="relion.class2d", command=["relion_refine"], parameters={"K": 50, "iter": 25},
                                resources={"cpus": 8, "walltime_s": 30 * 86_400}, inputs=inputs))  # fmt: skip
    assert job.status_code == 201, job.text
    assert job.json()["spec"]["workload"] == {"particles": 48_000, "box_px": 200, "pixel_size_a": 1.1}
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{job.json()['id']}/placement").json()
    assert "48,000 particles x 50 classes x 25 iterations, box 200 px on 8 CPUs" in why["explanation"]
    told = submit(jhub, me, spec(kind="relion.class2d", command=["relion_refine"], workload={"particles": 1000},
                                 inputs=[{"dataset": r.json()["id"]}])).json()  # fmt: skip
    assert told["spec"]["workload"]["particles"] == 1000, "what the submitter says wins over the dataset"


def test_estimate_shows_each_site_without_submitting(jhub: Hub, tmp_path: Path) -> None:
    from tests.cli.test_cli import run
    from tests.hub.test_costs import CHEAP, CLOUD

    add_site(jhub, tmp_path, "onprem", CHEAP)
    add_site(jhub, tmp_path, "cloud", CLOUD, institution="aws")
    add_site(jhub, tmp_path, "tiny", [{**CPU_SITE[0], "node_count": 1, "cores_per_node": 2}])
    me = jhub.account("researcher", institution="kek")
    body = spec(resources={"cpus": 8, "walltime_s": 7200})
    with jhub.as_(me) as c:
        r = c.post("/api/v1/jobs/estimate", json=body)
        assert r.status_code == 200, r.text
        assert c.get("/api/v1/jobs").json()["total"] == 0, "nothing was submitted"
    e = r.json()
    by_site = {s["site"]: s for s in e["sites"]}
    assert [s["site"] for s in e["sites"]][-1] == "tiny" and by_site["tiny"]["runtime"] is None
    assert by_site["tiny"]["reasons"] == ["no partition fits: cpu: 2 cores per node < 8"]
    assert by_site["onprem"]["runtime"]["p50"] == 3600 and by_site["onprem"]["cost"] == pytest.approx(0.08)
    assert by_site["cloud"]["startup_s"] == 300 and by_site["cloud"]["cost"] == pytest.approx(1.36 * 3900 / 3600, abs=0.01)
    assert e["currency"] == "USD"
    with jhub.as_(me) as c:
        bad = c.post("/api/v1/jobs/estimate", json={**body, "resources": {"cpu": 8}})
    assert bad.status_code == 422 and "resources.cpu" in bad.json()["detail"]
    agent = jhub.http(jhub.agent_token(jhub.enroll_agent("onprem", tmp_path / "agent")))
    denied = agent.post("/api/v1/jobs/estimate", json=body)
    agent.close()
    assert denied.status_code == 403
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: est\nkind: generic.command\ncommand: [echo]\nresources: {cpus: 8, walltime_s: 7200}\n")
    out = run(jhub, "jobs", "estimate", str(spec_file), account=me)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "onprem" in out.stdout and "1 h 00 m" in out.stdout and "benchmarks" in out.stdout and "0.08" in out.stdout
