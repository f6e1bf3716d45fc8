"""Capacity discovery backends: the local machine, or a Slurm cluster."""

from __future__ import annotations

from collections.abc import Callable

from site_agent.config import DiscoverySection
from site_agent.discovery.base import Discovery
from site_agent.executors.base import Allocation


def make_discovery(cfg: DiscoverySection, allocated: Callable[[], Allocation] | None = None) -> Discovery:
    """``allocated`` says what the agent's own jobs hold; the local backend reports that as allocated."""
    if cfg.backend == "slurm":
        from site_agent.discovery.slurm import SlurmDiscovery

        return SlurmDiscovery(cfg)
    if cfg.backend == "declared":
        from site_agent.discovery.declared import DeclaredDiscovery

        return DeclaredDiscovery(cfg)
    from site_agent.discovery.local import LocalDiscovery

    return LocalDiscovery(cfg, allocated)


__all__ = ["Discovery", "make_discovery"]
