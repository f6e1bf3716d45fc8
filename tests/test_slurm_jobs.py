"""The Slurm executor on a real single-node cluster (four A100s emulated through GRES):
GPU jobs, failures, cancel, and an agent restarted mid-job re-adopting its Slurm job."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.processes import AgentProcess, HubProcess, enrolled_agent
from tests.services import SlurmCluster, wait_for
from tests.test_jobs_e2e import job, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_network(tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster) -> Iterator[tuple[HubProcess, AgentProcess]]:
    """One hub and one enrolled Slurm site for the module (starting them takes longer than
    most of these tests): each test submits its own jobs as its own researcher."""
    slurm.cancel_all()
    # Leases of a minute, not 3 s: an agent restarted on a busy machine takes a while to
    # start, and its job must still be its own when it comes back.
    tmp_path = tmp_path_factory.mktemp("slurm-site")
    hub = HubProcess(tmp_path / "hub", missed_heartbeats=60)
    hub.start()
    agent = enrolled_agent(
        hub, tmp_path, "slurm-site",
        discovery=f'backend = "slurm"\nslurm_conf = "{slurm.conf}"',
        extra=f'[executor]\ntype = "slurm"\nslurm_conf = "{slurm.conf}"\n'
        'partition = "cpu"\ngpu_partition = "gpu"\npoll_interval_s = 0.5\n',
    )  # fmt: skip
    agent.start(hub.env)
    wait_for(lambda: hub.site("slurm-site")["reachability"] == "online", 60, "the Slurm site to come online")
    yield hub, agent
    agent.stop()
    hub.stop()
    slurm.cancel_all()


@pytest.fixture
def slurm_site(slurm_network: tuple[HubProcess, AgentProcess], slurm: SlurmCluster) -> tuple[HubProcess, AgentProcess]:
    """The module's site, with Slurm's queue empty: nothing left from an earlier test."""
    slurm.cancel_all()
    return slurm_network


def test_gpu_job_gets_its_gpus_from_slurm(slurm_site: tuple[HubProcess, AgentProcess]) -> None:
    hub, _ = slurm_site
    me = hub.account("researcher", institution="kek")
    body = job(
        "refine", command=["sh", "-c", "echo gpus=$CUDA_VISIBLE_DEVICES; echo partition=$SLURM_JOB_PARTITION"],
        resources={"cpus": 1, "gpus": 2, "gpu_model": "a100", "memory_gb": 0.1, "walltime_s": 120},
    )  # fmt: skip
    j = hub.call("POST", "/api/v1/jobs", me, json=body)
    done = wait_state(hub, j["id"], {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
    assert done["state"] == "COMPLETE", done
    out = hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stdout_tail"]
    assert "gpus=0,1" in out and "partition=gpu" in out


def test_cpu_job_failure_maps_to_executor_error(slurm_site: tuple[HubProcess, AgentProcess]) -> None:
    hub, _ = slurm_site
    me = hub.account("researcher", institution="kek")
    j = hub.call("POST", "/api/v1/jobs", me, json=job(command=["sh", "-c", "echo partition=$SLURM_JOB_PARTITION; exit 7"],
                                                          resources={"cpus": 1, "memory_gb": 0.1}))  # fmt: skip
    done = wait_state(hub, j["id"], {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
    assert done["state"] == "EXECUTOR_ERROR" and done["exit_code"] == 7
    assert "partition=cpu" in hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stdout_tail"]


def test_cancel_reaches_slurm(slurm_site: tuple[HubProcess, AgentProcess], slurm: SlurmCluster) -> None:
    hub, _ = slurm_site
    me = hub.account("researcher", institution="kek")
    j = hub.call("POST", "/api/v1/jobs", me, json=job(command=["sleep", "300"], resources={"cpus": 1, "memory_gb": 0.1}))
    wait_state(hub, j["id"], {"RUNNING"})
    assert slurm.run("squeue", "-h", "-o", "%i").strip(), "the job is in Slurm"
    hub.call("POST", f"/api/v1/jobs/{j['id']}/cancel", me)
    wait_state(hub, j["id"], {"CANCELED"})
    wait_for(lambda: not slurm.run("squeue", "-h", "-o", "%i").strip(), 60, "Slurm to drop the canceled job")


def test_restarted_agent_readopts_its_slurm_job(slurm_site: tuple[HubProcess, AgentProcess], slurm: SlurmCluster) -> None:
    hub, agent = slurm_site
    me = hub.account("researcher", institution="kek")
    j = hub.call(
        "POST",
        "/api/v1/jobs",
        me,
        json=job(command=["sh", "-c", "sleep 6; echo finished"], resources={"cpus": 1, "memory_gb": 0.1}),
    )
    wait_state(hub, j["id"], {"RUNNING"})
    slurm_ids = slurm.run("squeue", "-h", "-o", "%i").split()
    agent.kill()  # SIGKILL: no chance to tidy up
    time.sleep(1)
    agent.start(hub.env)
    done = wait_state(hub, j["id"], {"COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR", "QUEUED"})
    assert done["state"] == "COMPLETE" and done["attempt"] == 1, "the same attempt finished; nothing was re-run"
    assert "finished" in hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stdout_tail"]
    assert any("re-adopted attempt" in m and slurm_ids[0] in m for m in agent.messages())
