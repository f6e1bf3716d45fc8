"""Reading RELION's ``run_submit.script``, as filled in from ``deploy/relion/cryomesh_submit.sh``.

RELION fills the template by plain string replacement (``XXXmpinodesXXX``, ``XXXnameXXX``,
``XXXextra1XXX``…; a placeholder it has no value for stays as it is) and writes one line
per command where the template says ``XXXcommandXXX``. No shell ever runs the script: the
``#cryomesh <key> <value>`` lines say what the job needs, every other line that is not a
comment is a RELION command line, which becomes argv here. RELION 3.1 writes them as
`` `which relion_refine` --o Class2D/job001/run --i particles.star … ``; a template may put
``mpirun -n XXXmpinodesXXX`` in front. A line that needs a shell (pipes, redirections,
substitutions) is refused with the line it is on. A program that is not RELION's (a
*generic command*) is sent by its name; only a site whose policy allows it runs it
(``[policy] generic_commands``), the others refuse the job saying so.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.schemas.jobs import Resources
from shared.schemas.relion import RelionCommand

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
    program = Path(argv[0]).name  # the site runs its own install of it
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


def _float(fields: dict[str, str], key: str, what: str) -> float | None:
    value = fields.get(key, "")
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ScriptError(f"#cryomesh {key}: {value!r} is not {what}") from None
    if not math.isfinite(number) or number < 0:
        raise ScriptError(f"#cryomesh {key}: {value!r} is not {what}")
    return number


def deadline(value: str, now: datetime) -> datetime:
    """``+N`` or ``+Nh`` (hours from now) or an ISO 8601 time with its zone
    (``2027-01-31T18:00+09:00``, ``…Z``); a time already past is refused."""
    wrong = f"#cryomesh deadline: {value!r} is not +hours (e.g. +12) or a time like 2027-01-31T18:00Z"
    if value.startswith("+"):
        try:
            when = now + timedelta(hours=float(value[1:].removesuffix("h")))
        except (ValueError, OverflowError):
            raise ScriptError(wrong) from None
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ScriptError(wrong) from None
        if when.tzinfo is None:
            raise ScriptError(f"#cryomesh deadline: {value!r} needs a time zone, e.g. {value}Z or {value}+09:00")
    if when <= now:
        raise ScriptError(f"#cryomesh deadline: {value!r} is already past")
    return when


def job_fields(script: SubmitScript, now: datetime | None = None) -> dict[str, Any]:
    """The job spec's resources, ``max_cost`` and ``deadline`` from the script's ``#cryomesh``
    fields, checked here, before anything is published or sent; a bad value is a
    :class:`ScriptError` naming the field."""
    f = script.fields
    r: dict[str, Any] = {"cpus": script.mpi_ranks * script.threads, "mpi_ranks": script.mpi_ranks,
                         "threads_per_rank": script.threads}  # fmt: skip
    if f.get("gpus"):
        try:
            r["gpus"] = int(f["gpus"])
        except ValueError:
            raise ScriptError(f"#cryomesh gpus: {f['gpus']!r} is not a whole number") from None
    if f.get("gpu_model"):
        r["gpus"] = r.get("gpus") or 1
        r["gpu_model"] = f["gpu_model"]
    if (memory := _float(f, "memory_gb", "a number of GB")) is not None:
        r["memory_gb"] = memory
    if (hours := _float(f, "walltime_h", "a number of hours")) is not None:
        r["walltime_s"] = max(1, int(hours * 3600))
    try:
        Resources.model_validate(r)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'resources'}: {e['msg']}" for e in exc.errors())
        raise ScriptError(f"the job's resources: {problems}") from None
    out: dict[str, Any] = {"resources": r}
    if (cost := _float(f, "max_cost", "an amount (a number, at least 0)")) is not None:
        if cost > 1e9:
            raise ScriptError(f"#cryomesh max_cost: {f['max_cost']!r} is more than 1e9")
        out["max_cost"] = cost
    if f.get("deadline"):
        out["deadline"] = deadline(f["deadline"], now or datetime.now(UTC)).isoformat()
    return out
