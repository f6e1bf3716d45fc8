"""Elastic cloud sites against a real Slurm (issue 12, part 4): partitions of power-saving
``State=CLOUD`` nodes, in on-demand and spot twins, whose ``ResumeProgram`` "boots" a node by
starting its slurmd a few seconds later and whose ``SuspendProgram`` stops it once idle
(cryomesh_cli/devcloud.py). Slurm's power saving, states and timeouts are real; only the
cloud instances are pretended, as nothing here can start one.

- the agent's discovery reports what a partition has now and what it could start;
- a job on a powered-down partition waits while its node starts, runs, and the node powers
  down again after ``SuspendTime``;
- a cloud node lost mid-job (``state=DOWN``, ``state=POWER_DOWN_FORCE``) ends the attempt
  PREEMPTED, not failed, and the hub requeues the job, which ends exactly once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryomesh_cli.devcloud import elastic_cluster
from cryomesh_cli.devslurm import unavailable_reason
from shared.schemas.capacity import PartitionCapacity
from shared.schemas.jobs import JobSpec, JobState
from site_agent.config import DiscoverySection, ExecutorSection
from site_agent.discovery.slurm import SlurmDiscovery
from site_agent.executors.base import Status
from site_agent.executors.slurm import SlurmExecutor
from site_agent.jobstore import JobHandle
from tests.processes import HubProcess, enrolled_agent
from tests.services import SlurmCluster, missing, wait_for
from tests.test_jobs_e2e import job, wait_state

pytestmark = pytest.mark.slow

SUSPEND_TIME_S = 5
#: Generous: a node's start and stop wait on slurmctld's power-saving thread and on a busy machine.
DEADLINE_S = 90


@pytest.fixture(scope="module")
def cloud() -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason:
        missing(reason)
    with elastic_cluster(("c5-vcpu1",), nodes=2, boot_s=3, suspend_time_s=SUSPEND_TIME_S) as cluster:
        yield cluster


def node_state(cluster: SlurmCluster, node: str) -> str:
    out = cluster.run("scontrol", "show", "node", node, "-o", check=False)
    m = re.search(r"\bState=(\S+)", out)
    return m.group(1) if m else ""


def partitions(cluster: SlurmCluster) -> dict[str, PartitionCapacity]:
    found = SlurmDiscovery(DiscoverySection(backend="slurm", slurm_conf=cluster.conf)).partitions()
    return {p.name: p for p in found}


def submit(cluster: SlurmCluster, tmp: Path, partition: str, command: list[str]) -> tuple[SlurmExecutor, JobHandle]:
    ex = SlurmExecutor(ExecutorSection(type="slurm", slurm_conf=cluster.conf, partition=partition))
    spec = JobSpec.model_validate({"name": "t", "kind": "generic.command", "command": command,
                                   "resources": {"cpus": 1, "memory_gb": 0.1, "walltime_s": 600}})  # fmt: skip
    h = JobHandle(attempt_id="a1", job_id="0123456789abcdef", attempt=1, executor="slurm", workdir=str(tmp / "w"),
                  spec={}, institution="kek")  # fmt: skip
    h.local_id = ex.submit(h, spec)
    return ex, h


def poll_until(ex: SlurmExecutor, h: JobHandle, states: set[JobState]) -> Status:
    seen: list[Status] = []

    def reached() -> bool:
        seen.append(ex.poll(h))
        h.state = seen[-1].state.value  # what the agent's work loop records as reported
        return seen[-1].state in states

    wait_for(reached, DEADLINE_S, f"Slurm job {h.local_id} to reach {states} (last {seen[-1] if seen else None})", 0.2)
    return seen[-1]


def test_discovery_reports_what_could_be_started(cloud: SlurmCluster) -> None:
    parts = partitions(cloud)
    assert set(parts) == {"c5-vcpu1", "c5-vcpu1-spot"}
    spot, ondemand = parts["c5-vcpu1-spot"], parts["c5-vcpu1"]
    assert spot.spot and not ondemand.spot, "spot twins are named '-spot', as GoToCloud names them"
    for p in (spot, ondemand):
        assert p.elastic and p.nodes_total == 2 and p.cpus_total == 2 and p.resume_timeout_s == 60
        assert p.nodes_available + p.nodes_booting + p.nodes_bootable == 2


def test_a_job_waits_while_its_node_starts_and_the_node_powers_down_after(cloud: SlurmCluster, tmp_path: Path) -> None:
    node = "c5-vcpu1-dy-1"
    wait_for(lambda: "POWERED_DOWN" in node_state(cloud, node), DEADLINE_S, f"{node} to be powered down")
    before = partitions(cloud)["c5-vcpu1"]
    assert before.cpus_idle == 0 and before.cpus_bootable == 2 and before.nodes_bootable == 2
    ex, h = submit(cloud, tmp_path, "c5-vcpu1", ["sh", "-c", "echo ran on $SLURMD_NODENAME"])
    wait_for(lambda: "POWERING_UP" in node_state(cloud, node), DEADLINE_S, f"{node} to start (POWERING_UP)")
    squeue = cloud.run("squeue", "-h", "-j", str(h.local_id), "-o", "%T")
    assert squeue.strip() in ("CONFIGURING", "PENDING"), "the job waits for its node"
    assert ex.poll(h).state is JobState.INITIALIZING
    starting = partitions(cloud)["c5-vcpu1"]
    assert starting.nodes_booting == 1 and starting.nodes_bootable == 1
    done = poll_until(ex, h, {JobState.COMPLETE, JobState.EXECUTOR_ERROR, JobState.SYSTEM_ERROR, JobState.PREEMPTED})
    assert done.state is JobState.COMPLETE, done
    assert h.extra.get("node_started") is True, "the agent tells the ledger a node was started for the job"
    assert (tmp_path / "w" / "stdout.txt").read_text().strip() == f"ran on {node}"
    wait_for(lambda: "POWERED_DOWN" in node_state(cloud, node), DEADLINE_S, f"{node} to power down after SuspendTime")
    after = partitions(cloud)["c5-vcpu1"]
    assert after.nodes_bootable == 2 and after.cpus_bootable == 2 and after.nodes_available == 0


def power_up(cluster: SlurmCluster, nodes: str) -> None:
    """Start nodes ahead of work (``scontrol power up``), so a job need not wait for a boot:
    slurmctld notices that a started node's job may run only every 30 s or so."""
    cluster.run("scontrol", "update", f"nodename={nodes}", "state=POWER_UP")
    names = cluster.run("scontrol", "show", "hostnames", nodes).split()
    wait_for(lambda: all(node_state(cluster, n) == "IDLE+CLOUD" for n in names), DEADLINE_S, f"{nodes} to start")


def test_a_cloud_node_taken_down_mid_job_preempts_the_attempt(cloud: SlurmCluster, tmp_path: Path) -> None:
    power_up(cloud, "c5-vcpu1-dy-[1-2]")
    ex, h = submit(cloud, tmp_path, "c5-vcpu1", ["sleep", "300"])
    poll_until(ex, h, {JobState.RUNNING})
    assert h.extra.get("node_started") is False, "its node was up before it was submitted: no start-up to pay for"
    node = cloud.run("squeue", "-h", "-j", str(h.local_id), "-o", "%N").strip()
    cloud.run("scontrol", "update", f"nodename={node}", "state=DOWN", "reason=instance reclaimed")
    try:
        ended = poll_until(ex, h, {JobState.PREEMPTED, JobState.SYSTEM_ERROR, JobState.EXECUTOR_ERROR, JobState.COMPLETE})
        assert ended.state is JobState.PREEMPTED, ended
        assert ended.reason is not None and f"cloud node {node}" in ended.reason
    finally:
        cloud.run("scontrol", "update", f"nodename={node}", "state=RESUME", check=False)


def test_a_job_slurm_requeues_is_preempted_and_not_run_twice(cloud: SlurmCluster, tmp_path: Path) -> None:
    """A job submitted without ``--no-requeue`` (by an older agent, then re-adopted) that Slurm
    requeues when its node goes down: the attempt is PREEMPTED, and Slurm's copy is cancelled
    so that it does not run again behind the hub's back."""
    node = "c5-vcpu1-spot-dy-1"
    power_up(cloud, node)
    script = tmp_path / "old.sbatch"
    script.write_text("#!/bin/sh\nsleep 300\n")
    local_id = cloud.run("sbatch", "--parsable", "--requeue", "-p", "c5-vcpu1-spot", "-w", node, "--mem=50M",
                         f"--output={tmp_path}/out.txt", str(script)).strip()  # fmt: skip
    ex = SlurmExecutor(ExecutorSection(type="slurm", slurm_conf=cloud.conf))
    h = JobHandle(attempt_id="a2", job_id="0123456789abcdef", attempt=1, executor="slurm", workdir=str(tmp_path),
                  spec={}, institution="kek", local_id=local_id)  # fmt: skip
    poll_until(ex, h, {JobState.RUNNING})
    cloud.run("scontrol", "update", f"nodename={node}", "state=DOWN", "reason=instance reclaimed")
    try:
        ended = poll_until(ex, h, {JobState.PREEMPTED, JobState.SYSTEM_ERROR, JobState.EXECUTOR_ERROR, JobState.COMPLETE})
        assert ended.state is JobState.PREEMPTED and ended.reason is not None and "requeued" in ended.reason, ended
        wait_for(lambda: "JobState=CANCELLED" in cloud.run("scontrol", "show", "job", local_id, "-o", check=False),
                 DEADLINE_S, "Slurm's requeued copy to be cancelled")  # fmt: skip
    finally:
        cloud.run("scontrol", "update", f"nodename={node}", "state=RESUME", check=False)


@pytest.fixture
def spot_cluster() -> Iterator[SlurmCluster]:
    """Its own cluster, whose idle nodes stay up for a minute: the test starts both spot nodes
    ahead of the job so that neither attempt waits for a boot."""
    reason = unavailable_reason()
    if reason:
        missing(reason)
    with elastic_cluster(("c5-vcpu1",), nodes=2, boot_s=1, suspend_time_s=60) as cluster:
        yield cluster


def test_spot_node_powered_down_mid_job_requeues_at_the_hub(spot_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The whole path: real hub and agent processes, the agent's Slurm executor. The site
    registers both twins and the agent's setting allows both: the hub places the preemptible
    job on the spot twin (up, and cheaper) and the agent submits it there.
    Attempt 1 sleeps until its node is forced down; attempt 2 runs and completes."""
    cloud = spot_cluster
    hub = HubProcess(tmp_path / "hub", missed_heartbeats=60)
    hub.start()
    parts = [{"name": name, "node_count": 2, "cores_per_node": 1, "memory_gb_per_node": 0.2, "spot": spot,
              "cost": {"instance_type": "c5.large", "on_demand_node_hour": 0.107, "spot_node_hour": 0.04,
                       "node_startup_s": 3, "as_of": "2026-11-01"}}
             for name, spot in (("c5-vcpu1", False), ("c5-vcpu1-spot", True))]  # fmt: skip
    agent = enrolled_agent(
        hub, tmp_path, "aws-tokyo", partitions=parts,
        discovery=f'backend = "slurm"\nslurm_conf = "{cloud.conf}"',
        extra=f'[executor]\ntype = "slurm"\nslurm_conf = "{cloud.conf}"\n'
        'partition = "c5-vcpu1,c5-vcpu1-spot"\npoll_interval_s = 0.5\n',
    )  # fmt: skip
    agent.start(hub.env)
    try:
        wait_for(lambda: hub.site("aws-tokyo")["reachability"] == "online", 60, "the cloud site to come online")
        power_up(cloud, "c5-vcpu1-spot-dy-[1-2]")
        me = hub.account("researcher", institution="kek")
        body = job(command=["sh", "-c", 'echo attempt=$CRYOMESH_ATTEMPT; [ "$CRYOMESH_ATTEMPT" = 1 ] && sleep 300; true'],
                   resources={"cpus": 1, "memory_gb": 0.1, "walltime_s": 600},
                   placement={"preemptible": True})  # fmt: skip
        j = hub.call("POST", "/api/v1/jobs", me, json=body)
        wait_state(hub, j["id"], {"RUNNING"}, timeout=DEADLINE_S)
        node = cloud.run("squeue", "-h", "-o", "%N").strip()
        assert node.startswith("c5-vcpu1-spot-dy-"), f"submitted to the partition the hub chose: {node}"
        cloud.run("scontrol", "update", f"nodename={node}", "state=POWER_DOWN_FORCE")
        done = wait_state(hub, j["id"], {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}, timeout=2 * DEADLINE_S)
        assert done["state"] == "COMPLETE" and done["attempt"] == 2, done
        assert "attempt=2" in hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stdout_tail"]
        assert any("ended: PREEMPTED" in m for m in agent.messages()), "the agent reported the lost node as a preemption"
        placement = hub.call("GET", f"/api/v1/jobs/{j['id']}/placement", me)
        placed = sorted(d["attempt"] for d in placement["history"] if d["outcome"] == "placed")
        assert placed == [1, 2], placement["history"]
        first = next(d for d in placement["history"] if d["outcome"] == "placed")
        assert first["verdicts"][0]["partition"] == "c5-vcpu1-spot" and "partition c5-vcpu1-spot (spot)" in first["summary"]
        usage = hub.call("GET", "/api/v1/usage", me)
        [row] = usage["consumed_by_institution"]
        assert row["attempts"] == 2, "each attempt booked once: the preempted one and the one that completed"
    finally:
        agent.stop()
        hub.stop()
        cloud.run("scancel", "--user", "root", check=False)
