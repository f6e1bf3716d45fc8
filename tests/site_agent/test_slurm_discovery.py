"""Slurm discovery against a real single-node cluster (slurmctld + slurmd + munge), with
four A100s emulated through GRES, plus parsing of awkward scontrol output."""

from __future__ import annotations

import time

import pytest

from site_agent.config import DiscoverySection
from site_agent.discovery.slurm import SlurmDiscovery, SlurmError, parse_nodes, parse_queue, summarize
from tests.services import SlurmCluster, wait_for


def discover(cluster: SlurmCluster) -> SlurmDiscovery:
    return SlurmDiscovery(DiscoverySection(backend="slurm", slurm_conf=cluster.conf))


def by_name(parts: list) -> dict:  # type: ignore[type-arg]
    return {p.name: p for p in parts}


def test_idle_cluster(slurm: SlurmCluster) -> None:
    slurm.cancel_all()
    d = discover(slurm)
    parts = by_name(d.partitions())
    assert set(parts) == {"gpu", "cpu"}
    gpu = parts["gpu"]
    assert gpu.nodes_total == 1 and gpu.nodes_available == 1
    assert gpu.cpus_total == gpu.cpus_idle > 0 and gpu.cpus_allocated == 0
    assert [(g.model, g.total, g.free) for g in gpu.gpus] == [("a100", 4, 4)]
    totals = d.site_totals()
    assert totals is not None
    assert totals.gpus["a100"].total == 4, "a node in two partitions is counted once"
    assert totals.cpus_total == gpu.cpus_total


def test_running_and_pending_jobs(slurm: SlurmCluster) -> None:
    slurm.cancel_all()
    out = slurm.directory / "job.out"
    slurm.run(
        "sbatch",
        "-p",
        "gpu",
        "--gres=gpu:a100:2",
        "-c",
        "1",
        "--mem=100",
        "-o",
        str(out),
        "--wrap",
        "echo CUDA=$CUDA_VISIBLE_DEVICES; sleep 120",
    )
    slurm.run("sbatch", "-p", "gpu", "--gres=gpu:a100:4", "-c", "1", "--mem=100", "-o", "/dev/null", "--wrap", "sleep 120")
    wait_for(lambda: "RUNNING" in slurm.run("squeue", "-h", "-o", "%T"), 30, "the first job to start")
    wait_for(lambda: out.exists() and "CUDA=" in out.read_text(), 30, "the job's output")
    assert out.read_text().strip() == "CUDA=0,1", "Slurm handed the job two emulated GPUs"
    d = discover(slurm)
    gpu = by_name(d.partitions())["gpu"]
    assert [(g.model, g.total, g.free) for g in gpu.gpus] == [("a100", 4, 2)]
    assert gpu.cpus_allocated == 1 and gpu.cpus_idle == gpu.cpus_total - 1
    assert gpu.jobs_running == 1 and gpu.jobs_pending == 1
    totals = d.site_totals()
    assert totals is not None and totals.gpus["a100"].free == 2 and totals.jobs_pending == 1
    slurm.cancel_all()


def test_drained_node_lends_nothing(slurm: SlurmCluster) -> None:
    slurm.cancel_all()
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=drain", "reason=cryomesh-test")
    try:
        wait_for(lambda: "drain" in slurm.run("sinfo", "-h", "-o", "%t"), 60, "the node to drain")
        gpu = by_name(discover(slurm).partitions())["gpu"]
        assert gpu.nodes_available == 0 and gpu.cpus_idle == 0
        assert [(g.model, g.total, g.free) for g in gpu.gpus] == [("a100", 4, 0)]
    finally:
        slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=resume")
    wait_for(lambda: "idle" in slurm.run("sinfo", "-h", "-o", "%t"), 60, "the node to resume")


def test_partition_filter(slurm: SlurmCluster) -> None:
    d = SlurmDiscovery(DiscoverySection(backend="slurm", slurm_conf=slurm.conf, partitions=["cpu"]))
    assert [p.name for p in d.partitions()] == ["cpu"]


def test_unreachable_controller_is_an_error(slurm: SlurmCluster, tmp_path: object) -> None:
    conf = slurm.conf.read_text()
    broken = slurm.directory / "broken.conf"
    broken.write_text(
        conf.replace(f"SlurmctldHost={slurm.node}", "SlurmctldHost=127.0.0.1").replace("SlurmctldPort=", "SlurmctldPort=1#")
    )
    d = SlurmDiscovery(DiscoverySection(backend="slurm", slurm_conf=broken))
    start = time.monotonic()
    with pytest.raises(SlurmError):
        d.partitions()
    assert time.monotonic() - start < 60


SAMPLE = """\
NodeName=g1 Arch=x86_64 CoresPerSocket=32 CPUAlloc=16 CPUTot=64 CPULoad=10.0 Gres=gpu:a100:4(S:0-1) NodeAddr=g1 RealMemory=512000 AllocMem=128000 FreeMem=300000 State=MIXED Partitions=gpu,all GresUsed=gpu:a100:3(IDX:0-2) Reason=none
NodeName=g2 CPUAlloc=0 CPUTot=64 Gres=gpu:a100:4,gpu:v100:2 RealMemory=512000 AllocMem=0 State=DOWN* Partitions=gpu,all Reason=Not responding [slurm@2026-01-01T00:00:00]
NodeName=g3 CPUAlloc=8 CPUTot=32 Gres=gpu:2 RealMemory=256000 AllocMem=0 State=MIXED+DRAIN Partitions=all AllocTRES=cpu=8,gres/gpu=1
NodeName=c1 CPUAlloc=0 CPUTot=128 Gres=(null) RealMemory=1024000 AllocMem=0 State=IDLE Partitions=cpu,all
"""


def test_parse_mixed_states_and_gres() -> None:
    nodes = {n.name: n for n in parse_nodes(SAMPLE)}
    assert nodes["g1"].gpus_total == {"a100": 4} and nodes["g1"].gpus_alloc == {"a100": 3}
    assert nodes["g2"].gpus_total == {"a100": 4, "v100": 2} and not nodes["g2"].available
    assert nodes["g3"].gpus_total == {"gpu": 2} and nodes["g3"].gpus_alloc == {"gpu": 1} and not nodes["g3"].available
    assert nodes["c1"].available and nodes["c1"].gpus_total == {}
    pending, running = parse_queue("gpu|PENDING\ngpu,cpu|PENDING\nall|RUNNING\ncpu|COMPLETING\n")
    parts = {p.name: p for p in summarize(list(nodes.values()), pending, running, None)}
    gpu = parts["gpu"]
    assert gpu.cpus_total == 128 and gpu.cpus_idle == 48 and gpu.nodes_available == 1
    assert {g.model: (g.total, g.free) for g in gpu.gpus} == {"a100": (8, 1), "v100": (2, 0)}
    assert gpu.jobs_pending == 2 and parts["cpu"].jobs_pending == 1 and parts["cpu"].jobs_running == 1
    assert parts["all"].jobs_running == 1 and parts["all"].cpus_total == 288


#: A ParallelCluster-style site as Slurm 22.05 shows it (states as tests/test_elastic_slurm.py sees them).
CLOUD_SAMPLE = """\
NodeName=g5-dy-1 CPUAlloc=48 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=1000 State=ALLOCATED+CLOUD Partitions=g5-vcpu48-gpu4 GresUsed=gpu:a10g:4(IDX:0-3)
NodeName=g5-dy-2 CPUAlloc=24 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=1000 State=ALLOCATED+CLOUD+NOT_RESPONDING+POWERING_UP Partitions=g5-vcpu48-gpu4 GresUsed=gpu:a10g:2(IDX:0-1)
NodeName=g5-dy-3 CPUAlloc=0 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=0 State=IDLE+CLOUD+POWERED_DOWN Partitions=g5-vcpu48-gpu4
NodeName=g5-dy-4 CPUAlloc=0 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=0 State=IDLE+DRAIN+CLOUD+POWERED_DOWN Partitions=g5-vcpu48-gpu4
NodeName=g5-dy-5 CPUAlloc=0 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=0 State=IDLE+CLOUD+POWERING_DOWN Partitions=g5-vcpu48-gpu4
NodeName=g5-dy-6 CPUAlloc=8 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=0 State=ALLOCATED+CLOUD+POWERED_DOWN Partitions=g5-vcpu48-gpu4
NodeName=g5s-dy-1 CPUAlloc=0 CPUTot=48 Gres=gpu:a10g:4 RealMemory=186000 AllocMem=0 State=IDLE+CLOUD Partitions=g5-vcpu48-gpu4-spot
NodeName=c1 CPUAlloc=0 CPUTot=32 Gres=(null) RealMemory=64000 AllocMem=0 State=IDLE Partitions=cpu
"""


def test_parse_cloud_nodes_up_now_and_could_start() -> None:
    from site_agent.discovery.slurm import node_totals

    nodes = parse_nodes(CLOUD_SAMPLE)
    pending, running = parse_queue("")
    parts = by_name(summarize(nodes, pending, running, None, None, {"g5-vcpu48-gpu4": 1800}))
    g5, spot, cpu = parts["g5-vcpu48-gpu4"], parts["g5-vcpu48-gpu4-spot"], parts["cpu"]
    assert g5.elastic and not g5.spot and g5.resume_timeout_s == 1800
    assert (g5.nodes_total, g5.nodes_available, g5.nodes_booting, g5.nodes_bootable) == (6, 1, 2, 1), (
        "dy-1 is up (and busy); dy-2 powering up and dy-6 given a job while powered down are starting; dy-3 could start; "
        "dy-4 (drained) and dy-5 (powering down) could not"
    )
    assert g5.cpus_idle == 0 and g5.cpus_bootable == 24 + 48 + 40
    [a10g] = g5.gpus
    assert (a10g.total, a10g.free, a10g.bootable) == (24, 0, 2 + 4 + 4)
    assert spot.elastic and spot.spot and spot.cpus_idle == 48 and spot.cpus_bootable == 0 and spot.resume_timeout_s is None
    assert not cpu.elastic and not cpu.spot and cpu.cpus_idle == 32 and cpu.cpus_bootable == 0
    totals = node_totals(nodes, 0)
    assert totals.cpus_free == 48 + 32 and totals.cpus_bootable == 112 and totals.gpus_bootable == {"a10g": 10}
    named = by_name(summarize(nodes, pending, running, None, ["cpu"]))
    assert named["cpu"].spot and not named["g5-vcpu48-gpu4-spot"].spot, "the site's list, when given, is what counts"
