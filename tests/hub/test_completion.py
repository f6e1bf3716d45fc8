"""Placement by earliest completion (issue 12): CPU work stays off GPU sites when a CPU site
finishes about as soon; a job goes where its data is unless another site finishes sooner
even with the copy; each verdict names the parts of its estimate.

Agents are played by the test over real HTTP, as in tests/hub/test_jobs.py. The datasets'
sizes are what their manifests say (the hub never sees the bytes): a 5 TB dataset is
registered here with a manifest, not written to disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.schemas.datasets import ManifestFile, manifest_digest
from tests.helpers import Hub, running_hub
from tests.hub.test_datasets import register
from tests.hub.test_jobs import add_site, spec, submit, sweep_now

SMALL_CPU = [{"name": "cpu", "node_count": 1, "cores_per_node": 32, "memory_gb_per_node": 128}]
BIG_GPU = [{"name": "gpu", "node_count": 4, "cores_per_node": 64, "memory_gb_per_node": 512, "gpu_model": "a100",
            "gpus_per_node": 4}]  # fmt: skip
K80 = [{"name": "old", "node_count": 1, "cores_per_node": 32, "memory_gb_per_node": 256, "gpu_model": "k80", "gpus_per_node": 8}]
H100 = [{"name": "new", "node_count": 1, "cores_per_node": 64, "memory_gb_per_node": 1024, "gpu_model": "h100",
         "gpus_per_node": 8}]  # fmt: skip
RELION = [{"name": "relion", "version": "4.0.1"}]


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, max_attempts=2) as h:
        yield h


def verdicts(hub: Hub, who: Any, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    with hub.as_(who) as c:
        why = c.get(f"/api/v1/jobs/{job['id']}/placement").json()
    return {v["site"]: v for v in why["latest"]["verdicts"]}


def test_cpu_work_goes_to_the_cpu_site_and_gpu_work_to_the_gpu_site(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "gpu-rich", BIG_GPU, software=RELION)  # 256 cores: more headroom than the CPU site
    add_site(jhub, tmp_path, "cpu-only", SMALL_CPU, software=RELION)
    me = jhub.account("researcher", institution="kek")
    cpu_job = submit(jhub, me, spec(resources={"cpus": 8, "walltime_s": 7200})).json()
    gpu_job = submit(jhub, me, spec(kind="relion.class3d", command=["relion_refine"],
                                    resources={"cpus": 8, "gpus": 2, "walltime_s": 7200})).json()  # fmt: skip
    assert cpu_job["site"] == "cpu-only", "the CPU site finishes a CPU job as soon: the GPU site is kept for GPU work"
    assert gpu_job["site"] == "gpu-rich"
    v = verdicts(jhub, me, cpu_job)
    assert (
        v["gpu-rich"]["eligible"]
        and "a GPU site: kept for GPU work when a CPU site finishes about as soon" in (v["gpu-rich"]["reasons"])
    )
    assert v["cpu-only"]["score"] > v["gpu-rich"]["score"]
    assert v["cpu-only"]["score_parts"]["finish_s"] == v["gpu-rich"]["score_parts"]["finish_s"] == 3600


def _dataset(hub: Hub, tmp: Path, site: str, size: int) -> str:
    agent = hub.enroll_agent(site, tmp / f"{site}-registrar-{size}")
    files = [ManifestFile(path="Extract/particles.mrcs", size=size, checksum="AAAAAAAAAAA=")]
    body = {
        "title": f"particles of {size} bytes", "visibility": "network", "location": f"/data/{site}/ds{size}",
        "detector": {"model": "K3"},
        "image_sets": [{"category": "particle_stacks", "format": "mrcs", "count": 1, "width": 256, "height": 256,
                        "pixel_size_a": 1.1, "particles": 40_000}],
        "manifest": {"algorithm": "crc64nvme", "files": [f.model_dump() for f in files],
                     "digest": manifest_digest("crc64nvme", files)},
    }  # fmt: skip
    r = register(hub, agent, body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_job_goes_where_its_data_is_unless_another_site_finishes_sooner_even_with_the_copy(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "holder", K80, software=RELION)
    add_site(jhub, tmp_path, "fast", H100, software=RELION)
    big = _dataset(jhub, tmp_path, "holder", 5 * 10**12)  # 5 TB: 14 h at 100 MB/s
    small = _dataset(jhub, tmp_path, "holder", 10**9)  # 1 GB: 5 m to start the copy, 10 s of bytes
    me = jhub.account("researcher", institution="osaka-u")

    def job(dataset: str) -> dict[str, Any]:
        body = spec(kind="relion.class3d", command=["relion_refine"], parameters={"K": 4, "iter": 25},
                    resources={"cpus": 8, "gpus": 2, "walltime_s": 7 * 86_400}, inputs=[{"dataset": dataset}])  # fmt: skip
        r = submit(jhub, me, body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    near = job(big)
    assert near["site"] == "holder", "copying 5 TB takes longer than the old GPUs take to run it"
    v = verdicts(jhub, me, near)
    assert any("copying 5.0 TB" in r for r in v["fast"]["reasons"])
    assert v["fast"]["score_parts"]["copy_s"] == pytest.approx(300 + 5 * 10**12 / 100e6)
    assert v["holder"]["score_parts"]["copy_s"] == 0 and v["holder"]["score_parts"]["locality"] == 1.0
    far = job(small)
    assert far["site"] == "fast", "a 1 GB copy is soon done and the H100s finish far sooner than the K80s"
    v = verdicts(jhub, me, far)
    holder_run, fast = v["holder"]["score_parts"]["run_s"], v["fast"]["score_parts"]
    assert fast["finish_s"] == pytest.approx(fast["copy_s"] + fast["run_s"]) and fast["finish_s"] < holder_run
    [line] = [r for r in v["fast"]["reasons"] if r.startswith("finishes in ~")]
    assert (
        ": 5 m copying 1.0 GB from holder, no wait, " in line
        and "40,000 particles x 4 classes x 25 iterations, box 256 px on 2 h100" in line
    )


def test_a_preempted_attempt_is_requeued_and_the_job_ends_once(jhub: Hub, tmp_path: Path) -> None:
    """A spot node taken away mid-job: the agent reports PREEMPTED (Slurm's state, see
    site_agent/executors/slurm.py); the job is requeued without counting it as a failure and
    placed where it finishes first; it ends exactly once."""
    spot_part = {"name": "c6i-spot", "node_count": 4, "cores_per_node": 32, "memory_gb_per_node": 128, "spot": True,
                 "cost": {"instance_type": "c6i.8xlarge", "on_demand_node_hour": 1.36, "spot_node_hour": 0.5,
                          "as_of": "2026-11-01"}}  # fmt: skip
    spot = add_site(jhub, tmp_path, "cloud-spot", [spot_part], institution="aws")
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec(resources={"cpus": 8, "walltime_s": 3600})).json()
    for n in range(1, 5):  # preempted more often than max_attempts (2 here): still requeued
        [offer] = spot.poll()
        aid = offer["attempt_id"]
        assert spot.claim(aid).status_code == 200
        assert spot.report(aid, 1, "RUNNING").status_code == 200
        ack = spot.report(aid, 2, "PREEMPTED", reason="node reclaimed by the cloud provider")
        assert ack.json()["job_state"] == "QUEUED", ack.text
        sweep_now(jhub)
        with jhub.as_(me) as c:
            now = c.get(f"/api/v1/jobs/{job['id']}").json()
        assert now["state"] == "QUEUED" and now["attempt"] == n + 1, now
    _run_once(spot)
    with jhub.as_(me) as c:
        final = c.get(f"/api/v1/jobs/{job['id']}").json()
        usage = c.get("/api/v1/usage").json()
    assert final["state"] == "COMPLETE" and final["attempt"] == 5
    [row] = usage["consumed_by_institution"]
    assert row["attempts"] == 5, "every preempted attempt held a node and is booked"


def _run_once(agent: Any) -> None:
    [offer] = agent.poll()
    aid = offer["attempt_id"]
    assert agent.claim(aid).status_code == 200
    assert agent.report(aid, 1, "RUNNING").status_code == 200
    done = agent.report(aid, 2, "COMPLETE", exit_code=0)
    assert done.json()["job_state"] == "COMPLETE", done.text
    again = agent.report(aid, 3, "EXECUTOR_ERROR", exit_code=1)
    assert again.status_code == 409, "a job ends once"
