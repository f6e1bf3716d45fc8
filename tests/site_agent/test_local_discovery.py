"""Local-machine discovery, GPU model names, and the nvidia-smi fallback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psutil
import pytest

from site_agent.config import DiscoverySection, StorageSection
from site_agent.discovery.base import normalize_gpu_model, storage_capacity
from site_agent.discovery.declared import DeclaredDiscovery
from site_agent.discovery.local import LocalDiscovery
from site_agent.discovery.nvidia import discover_gpus, parse_nvidia_smi


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
