"""RELION jobs from other sites' projects, as this site sees them: checked against this
site's own RELION and policy, then handed to the runner (``site_agent/relion_runner.py``).

A visitor never gets a shell here. Each command is a program name with argv (the spec's
schema already refuses a path and any argument that leads outside the project):

- a RELION program runs from this site's own RELION: the build the agent measured that fits
  the job (``[software]``, ``site_agent.software.choose_build``); where nothing is measured
  (``probe = false``), the first of ``[software] relion_dirs`` that has it, else PATH.
  ``_mpi`` programs start under this site's launcher (``[relion] mpirun``) with the job's
  MPI ranks: inside the Slurm allocation when the site's executor is Slurm;
- any other program (a *generic command*) runs only as ``[policy] generic_commands`` allows
  (none by default; the listed programs; any), from the agent's PATH.

Files come only from exchange directories the site allow-lists.
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
from shared.schemas.software import MeasuredSoftware
from site_agent.config import AgentSettings

PLAN = "relion.json"


def _relion_dirs(settings: AgentSettings, build: MeasuredSoftware | None) -> list[Path]:
    """Where this site's RELION programs are looked for, in order."""
    if build is not None:
        return [Path(build.path)]
    return list(settings.software.relion_dirs)


def _program(settings: AgentSettings, cmd: RelionCommand, build: MeasuredSoftware | None) -> str | None:
    if not cmd.relion:
        return shutil.which(cmd.program)
    for where in _relion_dirs(settings, build):
        for d in (where, where / "bin"):
            path = d / cmd.program
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    if build is None and settings.software.search_path:
        return shutil.which(cmd.program)
    return None


def _argv(settings: AgentSettings, cmd: RelionCommand, program: str, ranks: int) -> list[str]:
    if cmd.mpi:
        return [*shlex.split(settings.relion.mpirun), "-n", str(ranks), program, *cmd.args]
    return [program, *cmd.args]


def _policy_refusal(settings: AgentSettings, cmd: RelionCommand) -> str | None:
    policy = settings.policy
    if cmd.relion or policy.generic_commands == "any":
        return None
    if policy.generic_commands == "listed":
        if cmd.program in policy.generic_programs:
            return None
        return (f"{cmd.program} is not a RELION program, and this site's policy runs only RELION programs and "
                f"{', '.join(policy.generic_programs)} ([policy] generic_programs)")  # fmt: skip
    return (f"{cmd.program} is not a RELION program, and this site's policy runs only RELION programs "
            "([policy] generic_commands = \"none\")")  # fmt: skip


def refusal(
    settings: AgentSettings, spec: JobSpec, build: MeasuredSoftware | None, measured: list[MeasuredSoftware]
) -> str | None:
    """Why this site will not run the RELION job, or None. ``build`` is the measured build
    chosen for the job; ``measured``, all this site measured (empty when it measures none)."""
    run = spec.relion
    if run is None:
        return None
    allowed = {p.resolve() for p in settings.relion.exchanges}
    if Path(run.exchange).resolve() not in allowed:
        return f"this site does not read project files from the exchange {run.exchange} ([relion] exchanges)"
    if build is None and any(m.name == "relion" for m in measured):
        found = ", ".join(f"{m.version} {m.build} at {m.path}" for m in measured if m.name == "relion")
        return f"none of this site's RELION builds fits the job (measured: {found})"
    for cmd in run.commands:
        if why := _policy_refusal(settings, cmd):
            return why
        if _program(settings, cmd, build) is None:
            where = build.path if build else ", ".join(map(str, [*settings.software.relion_dirs, "PATH"]))
            return f"this site has no {cmd.program} (looked in {where if cmd.relion else 'PATH'})"
        if cmd.mpi and shutil.which(shlex.split(settings.relion.mpirun)[0]) is None:
            return f"this site's MPI launcher {settings.relion.mpirun!r} is not found"
    return None


def write_plan(settings: AgentSettings, workdir: Path, spec: JobSpec, build: MeasuredSoftware | None) -> None:
    """What the runner needs, in the job's work dir: the commands as this site runs them."""
    run = spec.relion
    assert run is not None
    ranks = spec.resources.mpi_ranks
    commands = []
    for cmd in run.commands:
        program = _program(settings, cmd, build)
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
