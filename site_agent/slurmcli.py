"""Running Slurm's own commands, with the site's SLURM_CONF and bin dir if set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class SlurmError(RuntimeError):
    pass


def run_slurm(
    argv: list[str], bin_dir: Path | None, conf: Path | None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = [str(bin_dir / argv[0]) if bin_dir else argv[0], *argv[1:]]
    env = dict(os.environ)
    if conf:
        env["SLURM_CONF"] = str(conf)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{argv[0]} failed: {exc}") from exc
    if check and proc.returncode != 0:
        raise SlurmError(f"{' '.join(argv[:3])} exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc
