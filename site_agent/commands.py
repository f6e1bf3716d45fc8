"""What a job runs: its own argv, or the program of its kind with ``--key value`` parameters."""

from __future__ import annotations

import shlex
import sys

from shared.schemas.jobs import JobKind, JobSpec

PROGRAMS: dict[JobKind, str] = {
    JobKind.RELION_MOTIONCORR: "relion_run_motioncorr",
    JobKind.RELION_CTFFIND: "relion_run_ctffind",
    JobKind.RELION_AUTOPICK: "relion_autopick",
    JobKind.RELION_EXTRACT: "relion_preprocess",
    JobKind.RELION_CLASS2D: "relion_refine",
    JobKind.RELION_CLASS3D: "relion_refine",
    JobKind.RELION_REFINE3D: "relion_refine",
    JobKind.RELION_CTFREFINE: "relion_ctf_refine",
    JobKind.RELION_POLISH: "relion_motion_refine",
    JobKind.CRYOSPARC_JOB: "cryosparcm",
    JobKind.MOTIONCOR2: "MotionCor2",
}


def argv_for(spec: JobSpec) -> list[str]:
    if spec.tes is not None:  # a GA4GH TES task: the runner stages, runs the executors, collects
        return [sys.executable, "-m", "site_agent.tes_run", "tes_task.json"]
    if spec.relion is not None:  # the runner stages the project files, runs the commands, returns the output
        return [sys.executable, "-m", "site_agent.relion_runner", "relion.json"]
    if spec.command:
        return list(spec.command)
    program = PROGRAMS[spec.kind]
    # MPI builds of RELION are named *_mpi and started by the launcher of the executor.
    if spec.resources.mpi_ranks > 1 and program.startswith("relion_"):
        program += "_mpi"
    dash = "-" if spec.kind is JobKind.MOTIONCOR2 else "--"
    argv = [program]
    for key, value in spec.parameters.items():
        if value is True:
            argv.append(f"{dash}{key}")
        elif value is False:
            continue
        else:
            argv += [f"{dash}{key}", str(value)]
    return argv


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
