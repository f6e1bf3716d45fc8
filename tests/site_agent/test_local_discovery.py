"""Local-machine discovery (allocation is what the agent's jobs hold, never load), GPU model
names, and the nvidia-smi fallback."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from shared.schemas.capacity import GpuCapacity, PartitionCapacity
from shared.schemas.jobs import JobSpec, JobState
from site_agent.config import DiscoverySection, ExecutorSection, StorageSection
from site_agent.discovery.base import normalize_gpu_model, storage_capacity
from site_agent.discovery.declared import DeclaredDiscovery
from site_agent.discovery.local import LocalDiscovery, gpus_left
from site_agent.discovery.nvidia import discover_gpus, parse_nvidia_smi
from site_agent.executors.base import Allocation
from site_agent.executors.local import LocalExecutor
from site_agent.jobstore import JobHandle
from tests.helpers import busy_cpus, heartbeat_body


def test_local_machine_is_measured() -> None:
    [part] = LocalDiscovery(DiscoverySection(partition="bench")).partitions()
    assert part.name == "bench"
    assert part.cpus_total == os.cpu_count()
    assert part.cpus_allocated + part.cpus_idle == part.cpus_total
    assert part.memory_total_mb == psutil.virtual_memory().total // 2**20
    assert 0 < part.memory_free_mb <= part.memory_total_mb


@pytest.mark.parametrize(
    ("raw", "model"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("NVIDIA GeForce RTX 3090", "rtx-3090"),
        ("Tesla V100-PCIE-32GB", "v100"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA H100 NVL", "h100"),
    ],
)
def test_gpu_model_names(raw: str, model: str) -> None:
    assert normalize_gpu_model(raw) == model


def test_nvidia_smi_output_is_parsed() -> None:
    gpus = "GPU-aaa, NVIDIA A100-SXM4-80GB\nGPU-bbb, NVIDIA A100-SXM4-80GB\nGPU-ccc, NVIDIA RTX A6000\n"
    apps = "GPU-bbb\nGPU-bbb\n"
    parsed = {g.model: (g.total, g.free) for g in parse_nvidia_smi(gpus, apps)}
    assert parsed == {"a100": (2, 1), "rtx-a6000": (1, 1)}


def test_nvidia_smi_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no NVIDIA GPU, so nvidia-smi is faked here by a script printing
    what the real one prints for these queries; the real-hardware check is in docs."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  --query-gpu=*) printf "GPU-1, NVIDIA H100 80GB HBM3\\nGPU-2, NVIDIA H100 80GB HBM3\\n";;\n'
        '  --query-compute-apps=*) printf "GPU-2\\n";;\n'
        "esac\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    [gpu] = discover_gpus("nvidia-smi")
    assert (gpu.model, gpu.total, gpu.free) == ("h100", 2, 1)
    assert discover_gpus("none") == []


def test_no_gpus_here_means_none_reported() -> None:
    import shutil

    if Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi"):
        pytest.skip("this machine has NVIDIA GPUs")
    assert discover_gpus("auto") == [], "no NVML and no nvidia-smi: no GPUs, and no error"


def test_storage_free_space(tmp_path: Path) -> None:
    [s] = storage_capacity(
        [StorageSection(name="scratch", path=tmp_path), StorageSection(name="gone", path=tmp_path / "missing")]
    )
    assert s.name == "scratch" and 0 < s.free_bytes <= s.total_bytes


def test_declared_partitions() -> None:
    cfg = DiscoverySection.model_validate(
        {
            "backend": "declared",
            "declared": [
                {
                    "name": "g5",
                    "max_nodes": 10,
                    "cpus_per_node": 48,
                    "memory_gb_per_node": 192,
                    "gpu_model": "a10g",
                    "gpus_per_node": 4,
                }
            ],
        }
    )
    [p] = DeclaredDiscovery(cfg).partitions()
    assert (p.cpus_total, p.cpus_idle, p.nodes_total) == (480, 480, 10)
    assert [(g.model, g.total, g.free) for g in p.gpus] == [("a10g", 40, 40)]
    with pytest.raises(ValueError, match="needs"):
        DeclaredDiscovery(DiscoverySection(backend="declared"))


# ------------------------------------------------------------------ allocation, not load


def _job(tmp: Path, attempt: str, cpus: int = 1, memory_gb: float = 1, **resources: object) -> JobHandle:
    spec = {"name": attempt, "kind": "generic.command", "command": ["sleep", "60"],
            "resources": {"cpus": cpus, "memory_gb": memory_gb, **resources}}  # fmt: skip
    return JobHandle(attempt_id=attempt, job_id=f"job-{attempt}", attempt=1, executor="local",
                     workdir=str(tmp / attempt), spec=spec, institution="kek")  # fmt: skip


def _start(ex: LocalExecutor, h: JobHandle) -> None:
    h.local_id = ex.submit(h, JobSpec.model_validate(h.spec))


def _end(ex: LocalExecutor, h: JobHandle) -> None:
    h.cancel_requested = True
    ex.cancel(h)
    deadline = time.monotonic() + 30
    while ex.poll(h).state is JobState.RUNNING:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.1)


def test_other_programs_load_is_information_not_allocation() -> None:
    """Real busy loops on every CPU, until the load average shows it: the machine still
    lends all its CPUs, because none of them is allocated to a job; the load is reported."""
    cpus = os.cpu_count() or 1
    with busy_cpus(load_at_least=1.0):
        [part] = LocalDiscovery(DiscoverySection(), LocalExecutor(ExecutorSection()).allocated).partitions()
    assert (part.cpus_allocated, part.cpus_idle) == (0, cpus), "load from other programs is not allocation"
    assert part.load_1m is not None and part.load_1m >= 1.0
    assert part.memory_free_mb == part.memory_total_mb, "no job holds memory"
    assert part.memory_available_mb is not None and 0 < part.memory_available_mb <= part.memory_total_mb
    assert part.jobs_running == 0


def test_jobs_the_executor_runs_are_what_is_allocated(tmp_path: Path) -> None:
    ex = LocalExecutor(ExecutorSection(cancel_grace_s=1))
    discovery = LocalDiscovery(DiscoverySection(), ex.allocated)
    [before] = discovery.partitions()
    assert before.cpus_allocated == 0
    first, second = _job(tmp_path, "a1", memory_gb=1.5), _job(tmp_path, "a2", memory_gb=0.5)
    _start(ex, first)
    try:
        [one] = discovery.partitions()
        assert (one.cpus_allocated, one.cpus_idle, one.jobs_running) == (1, before.cpus_total - 1, 1)
        assert one.memory_free_mb == one.memory_total_mb - 1536
        _start(ex, second)
        [two] = discovery.partitions()
        assert (two.cpus_allocated, two.jobs_running) == (min(2, two.cpus_total), 2)
        assert two.memory_free_mb == two.memory_total_mb - 2048
        if two.cpus_total >= 2:
            assert set(first.extra["cpu_ids"]).isdisjoint(second.extra["cpu_ids"]), "each job pinned to its own CPU"
            pinned = psutil.Process(int(second.local_id or 0)).cpu_affinity()
            assert pinned == second.extra["cpu_ids"]
        # A restarted agent's executor adopts the running job and counts what it holds.
        adopted = LocalExecutor(ExecutorSection())
        assert adopted.adopt(first)
        assert (adopted.allocated().cpus, adopted.allocated().memory_mb) == (1, 1536)
    finally:
        _end(ex, first)
    [left] = discovery.partitions()
    assert (left.cpus_allocated, left.jobs_running, left.memory_free_mb) == (1, 1, left.memory_total_mb - 512)
    _end(ex, second)
    [after] = discovery.partitions()
    assert (after.cpus_allocated, after.cpus_idle, after.jobs_running) == (0, after.cpus_total, 0)


def test_gpus_held_by_jobs_are_not_free() -> None:
    found = [GpuCapacity(model="a100", total=4, free=4), GpuCapacity(model="t4", total=2, free=2)]
    left = {g.model: g.free for g in gpus_left(found, {"a100": 1, None: 2})}
    assert left == {"a100": 1, "t4": 2}, "a job naming no model holds GPUs of the model with most left"
    assert {g.model: g.free for g in gpus_left(found, {"t4": 5})} == {"a100": 4, "t4": 0}
    held = Allocation()
    held.add(JobSpec.model_validate({"name": "x", "kind": "generic.command", "command": ["true"],
                                     "resources": {"cpus": 2, "gpus": 2, "gpu_model": "a100"}}))  # fmt: skip
    assert (held.cpus, held.gpus) == (2, {"a100": 2})


def test_load_is_optional_and_finite_on_the_wire() -> None:
    body = heartbeat_body()["partitions"][0]
    assert PartitionCapacity.model_validate(body).load_1m is None, "older agents send no load"
    with pytest.raises(ValidationError):
        PartitionCapacity.model_validate({**body, "load_1m": float("nan")})
