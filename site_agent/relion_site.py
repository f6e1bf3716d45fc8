"""RELION jobs from other sites' projects, as this site sees them: checked against this
site's own RELION and allow-list, then handed to the runner (``site_agent/relion_runner.py``).

A visitor never gets a shell here. Each command is a RELION program name with argv (the
spec's schema already refuses anything else and any argument that leads outside the
project); the program run is this site's own install of it (``[relion] bin_dir``, else
PATH), and ``_mpi`` programs start under this site's launcher (``[relion] mpirun``) with the
job's MPI ranks. Files come only from exchange directories the site allow-lists.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from shared.schemas.jobs import JobSpec
from shared.schemas.relion import RelionCommand
from site_agent.config import AgentSettings

PLAN = "relion.json"


def _program(settings: AgentSettings, name: str) -> str | None:
    where = settings.relion.bin_dir
    if where is not None:
        path = where / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(name)


def _argv(settings: AgentSettings, cmd: RelionCommand, program: str, ranks: int) -> list[str]:
    if cmd.mpi:
        return [*shlex.split(settings.relion.mpirun), "-n", str(ranks), program, *cmd.args]
    return [program, *cmd.args]


def refusal(settings: AgentSettings, spec: JobSpec) -> str | None:
    """Why this site will not run the RELION job, or None."""
    run = spec.relion
    if run is None:
        return None
    allowed = {p.resolve() for p in settings.relion.exchanges}
    if Path(run.exchange).resolve() not in allowed:
        return f"this site does not read project files from the exchange {run.exchange} ([relion] exchanges)"
    for cmd in run.commands:
        if _program(settings, cmd.program) is None:
            return f"this site has no {cmd.program} (looked in {settings.relion.bin_dir or 'PATH'})"
        if cmd.mpi and shutil.which(shlex.split(settings.relion.mpirun)[0]) is None:
            return f"this site's MPI launcher {settings.relion.mpirun!r} is not found"
    return None


def write_plan(settings: AgentSettings, workdir: Path, spec: JobSpec) -> None:
    """What the runner needs, in the job's work dir: the commands as this site runs them."""
    run = spec.relion
    assert run is not None
    ranks = spec.resources.mpi_ranks
    commands = []
    for cmd in run.commands:
        program = _program(settings, cmd.program)
        assert program is not None  # checked by refusal() before the job was claimed
        commands.append(_argv(settings, cmd, program, ranks))
    plan: dict[str, Any] = {
        "exchange": str(Path(run.exchange).resolve()),
        "cache_dir": str(settings.relion.cache_dir or settings.agent.state_dir / "relion-cache"),
        "output_dir": run.output_dir,
        "files": [f.model_dump() for f in run.files],
        "commands": commands,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / PLAN).write_text(json.dumps(plan, indent=1))
