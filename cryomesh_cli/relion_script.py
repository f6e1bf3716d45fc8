"""Reading RELION's ``run_submit.script``, as filled in from ``deploy/relion/cryomesh_submit.sh``.

RELION fills the template by plain string replacement (``XXXmpinodesXXX``, ``XXXnameXXX``,
``XXXextra1XXX``…; a placeholder it has no value for stays as it is) and writes one line
per command where the template says ``XXXcommandXXX``. No shell ever runs the script: the
``#cryomesh <key> <value>`` lines say what the job needs, every other line that is not a
comment is a RELION command line, which becomes argv here. RELION 3.1 writes them as
`` `which relion_refine` --o Class2D/job001/run --i particles.star … ``; a template may put
``mpirun -n XXXmpinodesXXX`` in front. Anything that is not a RELION program, or that
needs a shell (pipes, redirections, substitutions), is refused with the line it is on.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from shared.schemas.relion import RELION_PROGRAM, RelionCommand

#: RELION job types (the first part of a job's directory) and the cryomesh kind each runs as.
KINDS = {
    "Class2D": "relion.class2d",
    "Class3D": "relion.class3d",
    "InitialModel": "relion.class3d",
    "Refine3D": "relion.refine3d",
    "MultiBody": "relion.refine3d",
    "MotionCorr": "relion.motioncorr",
    "CtfFind": "relion.ctffind",
    "AutoPick": "relion.autopick",
    "Extract": "relion.extract",
    "CtfRefine": "relion.ctfrefine",
    "Polish": "relion.polish",
}
#: Queue names that leave the choice of site to the broker.
ANY_SITE = frozenset({"", "auto", "any", "network"})
_WHICH = re.compile(r"`\s*which\s+([A-Za-z0-9_.-]+)\s*`")
_UNFILLED = re.compile(r"^XXX[a-z0-9]+XXX$")
_SHELL = set("|;&<>$`(){}")
_LAUNCHERS = {"mpirun", "mpiexec", "srun"}


class ScriptError(ValueError):
    """The script cannot be sent to the network; the message says which line and why."""


@dataclass
class SubmitScript:
    output_dir: str
    kind: str
    queue: str
    mpi_ranks: int
    threads: int
    commands: list[RelionCommand]
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def site(self) -> str | None:
        return None if self.queue.lower() in ANY_SITE else self.queue


def _number(fields: dict[str, str], key: str, default: int) -> int:
    value = fields.get(key, "")
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise ScriptError(f"#cryomesh {key}: {value!r} is not a whole number") from None
    if n < 1:
        raise ScriptError(f"#cryomesh {key}: must be at least 1")
    return n


def parse_command(line: str, lineno: int) -> RelionCommand:
    text = _WHICH.sub(r"\1", line)
    if any(c in _SHELL for c in text):
        raise ScriptError(f"line {lineno}: {line.strip()!r} needs a shell (pipes, redirections, substitutions); "
                          "only RELION's own command lines are sent to the network")  # fmt: skip
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ScriptError(f"line {lineno}: {exc}") from None
    if argv and Path(argv[0]).name in _LAUNCHERS:  # the site starts MPI its own way, with the job's ranks
        argv = argv[1:]
        while argv and argv[0].startswith("-"):
            argv = argv[2:] if argv[0] in ("-n", "-np", "--ntasks", "-N") else argv[1:]
    if not argv:
        raise ScriptError(f"line {lineno}: an MPI launcher without a program")
    program = Path(argv[0]).name
    if not RELION_PROGRAM.match(program):
        raise ScriptError(
            f"line {lineno}: {program!r} is not a RELION program; the network runs only RELION's own programs (relion_...)"
        )
    try:
        return RelionCommand(program=program, args=argv[1:])
    except ValueError as exc:
        raise ScriptError(f"line {lineno}: {exc}") from None


def parse(text: str) -> SubmitScript:
    fields: dict[str, str] = {}
    commands = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#cryomesh "):
            key, _, value = line[len("#cryomesh ") :].strip().partition(" ")
            value = value.strip()
            fields[key] = "" if _UNFILLED.match(value) else value
        elif line and not line.startswith("#"):
            commands.append(parse_command(line, lineno))
    if not commands:
        raise ScriptError("the script has no RELION command line (is XXXcommandXXX in the template?)")
    output_dir = fields.get("output_dir", "").rstrip("/")
    if not output_dir:
        raise ScriptError("the script does not say the job's directory (#cryomesh output_dir XXXnameXXX)")
    job_type = output_dir.split("/")[0]
    if job_type not in KINDS:
        raise ScriptError(f"{job_type} jobs are not sent to the network (it runs {', '.join(sorted(KINDS))}); run it locally")
    return SubmitScript(
        output_dir=output_dir,
        kind=KINDS[job_type],
        queue=fields.get("queue", ""),
        mpi_ranks=_number(fields, "mpi_ranks", 1),
        threads=_number(fields, "threads", 1),
        commands=commands,
        fields=fields,
    )
