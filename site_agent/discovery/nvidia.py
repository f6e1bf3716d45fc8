"""NVIDIA GPUs through NVML (nvidia-ml-py), or ``nvidia-smi`` when NVML can't load.

A GPU counts as free when no compute process runs on it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections import Counter

from shared.schemas.capacity import GpuCapacity
from site_agent.discovery.base import normalize_gpu_model

log = logging.getLogger("cryomesh.agent.discovery")


def gpus_from_nvml() -> list[GpuCapacity] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        total: Counter[str] = Counter()
        free: Counter[str] = Counter()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            model = normalize_gpu_model(name.decode() if isinstance(name, bytes) else name)
            total[model] += 1
            if not pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                free[model] += 1
        return [GpuCapacity(model=m, total=n, free=free[m]) for m, n in sorted(total.items())]
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi(gpu_csv: str, apps_csv: str) -> list[GpuCapacity]:
    """``--query-gpu=uuid,name`` and ``--query-compute-apps=gpu_uuid`` CSV (noheader)."""
    busy = {line.strip() for line in apps_csv.splitlines() if line.strip()}
    total: Counter[str] = Counter()
    free: Counter[str] = Counter()
    for line in gpu_csv.splitlines():
        if not line.strip():
            continue
        uuid, _, name = (part.strip() for part in line.partition(","))
        model = normalize_gpu_model(name)
        total[model] += 1
        if uuid not in busy:
            free[model] += 1
    return [GpuCapacity(model=m, total=n, free=free[m]) for m, n in sorted(total.items())]


def gpus_from_nvidia_smi() -> list[GpuCapacity] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        gpus = subprocess.run(
            [smi, "--query-gpu=uuid,name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        apps = subprocess.run(
            [smi, "--query-compute-apps=gpu_uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return None
    return parse_nvidia_smi(gpus, apps)


def discover_gpus(method: str = "auto") -> list[GpuCapacity]:
    if method == "none":
        return []
    if method in ("auto", "nvml"):
        found = gpus_from_nvml()
        if found is not None or method == "nvml":
            return found or []
    return gpus_from_nvidia_smi() or []
