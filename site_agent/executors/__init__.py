"""Executors: where an agent runs a job (a local subprocess, or Slurm)."""

from __future__ import annotations

from site_agent.config import ExecutorSection
from site_agent.executors.base import Executor, Status


def make_executor(cfg: ExecutorSection) -> Executor:
    if cfg.type == "slurm":
        from site_agent.executors.slurm import SlurmExecutor

        return SlurmExecutor(cfg)
    from site_agent.executors.local import LocalExecutor

    return LocalExecutor(cfg)


__all__ = ["Executor", "Status", "make_executor"]
