"""What every discovery backend provides, and storage discovery shared by all."""

from __future__ import annotations

import re
import shutil
from typing import Protocol

from shared.schemas.capacity import CapacityTotals, PartitionCapacity, StorageCapacity
from site_agent.config import StorageSection


class Discovery(Protocol):
    name: str

    def partitions(self) -> list[PartitionCapacity]:
        """Read the scheduler or machine now; raises on failure."""
        ...

    def site_totals(self) -> CapacityTotals | None:
        """Site-wide totals from the last read when partitions share nodes; else None."""
        ...


_DROP_WORDS = {"nvidia", "tesla", "geforce", "quadro"}
_DROP_TOKEN = re.compile(r"^(sxm\d*|pcie|\d+gb|hbm\d*e?|nvl\d*|mig.*|\d+c)$")


def normalize_gpu_model(name: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'a100'; 'NVIDIA RTX A6000' -> 'rtx-a6000'."""
    tokens = [t for t in re.split(r"[\s\-_]+", name.lower()) if t]
    kept = [t for t in tokens if t not in _DROP_WORDS and not _DROP_TOKEN.match(t)]
    return "-".join(kept) or name.lower().strip() or "unknown"


def storage_capacity(endpoints: list[StorageSection]) -> list[StorageCapacity]:
    out = []
    for ep in endpoints:
        try:
            usage = shutil.disk_usage(ep.path)
        except OSError:
            continue  # a missing mount is reported as absent, not as zero space
        out.append(StorageCapacity(name=ep.name, path=str(ep.path), total_bytes=usage.total, free_bytes=usage.free))
    return out
