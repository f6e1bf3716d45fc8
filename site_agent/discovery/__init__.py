"""Capacity discovery backends: the local machine, or a Slurm cluster."""

from __future__ import annotations

from site_agent.config import DiscoverySection
from site_agent.discovery.base import Discovery


def make_discovery(cfg: DiscoverySection) -> Discovery:
    if cfg.backend == "slurm":
        from site_agent.discovery.slurm import SlurmDiscovery

        return SlurmDiscovery(cfg)
    if cfg.backend == "declared":
        from site_agent.discovery.declared import DeclaredDiscovery

        return DeclaredDiscovery(cfg)
    from site_agent.discovery.local import LocalDiscovery

    return LocalDiscovery(cfg)


__all__ = ["Discovery", "make_discovery"]
