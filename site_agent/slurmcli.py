"""Running Slurm's own commands, with the site's SLURM_CONF and bin dir if set."""

from __future__ import annotations

import os
import re
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


def parse_fields(line: str) -> dict[str, str]:
    """One line of ``scontrol show ... -o``: ``Key=Value Key2=Value two`` -> dict; values may
    hold spaces (e.g. Reason=)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(\w[\w/:.]*)=(.*?)(?=\s+\w[\w/:.]*=|$)", line.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out
