"""A RELION job sent from a researcher's project: its command lines, the project files they
read (content-addressed) and where those files wait to be fetched.

Written by ``cryomesh relion submit`` from RELION's ``run_submit.script``; carried in the job
spec (``JobSpec.relion``), so the hub stores and forwards it like any other job field and
never sees a byte of the data. The running site checks it again before running anything
(``site_agent/relion_site.py``): a visitor's spec is never trusted because the hub passed it on.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from shared.schemas.common import Int64, SafeStr, StrictModel
from shared.schemas.datasets import check_relative_path

#: A RELION program name: what RELION itself writes in its command lines.
RELION_PROGRAM = re.compile(r"^relion_[a-z0-9_]{1,60}$")
#: Any other program, by its bare name (no path): run only where the site's policy allows
#: generic commands (``[policy] generic_commands`` of the agent), from the site's own PATH.
PROGRAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_argument(arg: str) -> str:
    """An argument may name project files only by paths inside the project: no absolute
    path, no '..', so a command cannot read or write outside the copy of the project."""
    if arg.startswith("/") or ".." in re.split(r"[/@:]", arg):
        raise ValueError(f"argument {arg!r} leads outside the project directory")
    return arg


class RelionCommand(StrictModel):
    """One command line of a RELION job, as argv (no shell). ``program`` is a program name
    without a path: a RELION program (``relion_...``), which the site runs from its own
    RELION build, under MPI when ``mpi`` (the ``_mpi`` build); or another program (a
    *generic command*), which a site runs only if its policy allows it."""

    program: SafeStr = Field(description="e.g. 'relion_refine' or 'relion_refine_mpi'; other names are generic commands")
    args: list[SafeStr] = Field(default_factory=list, max_length=2000)

    @field_validator("program")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PROGRAM_NAME.match(v):
            raise ValueError(f"{v!r} is not a program name (a name without a path, e.g. relion_refine)")
        return v

    @property
    def relion(self) -> bool:
        """A RELION program (else a generic command)."""
        return RELION_PROGRAM.match(self.program) is not None

    @field_validator("args")
    @classmethod
    def _inside(cls, v: list[str]) -> list[str]:
        for a in v:
            check_argument(a)
        return v

    @property
    def mpi(self) -> bool:
        return self.relion and self.program.endswith("_mpi")


class ProjectFile(StrictModel):
    path: SafeStr = Field(description="Relative to the project directory")
    size: Int64 = Field(ge=0)
    sha256: SafeStr

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return check_relative_path(v)

    @field_validator("sha256")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return v


class RelionRun(StrictModel):
    commands: list[RelionCommand] = Field(min_length=1, max_length=50)
    files: list[ProjectFile] = Field(default_factory=list, max_length=1_000_000)
    output_dir: SafeStr = Field(description="The job's directory in the project, e.g. 'Class2D/job012'")
    exchange: SafeStr = Field(
        max_length=1024, description="The home site's exchange directory holding the files (cas/<sha256>); sites allow-list it"
    )

    @field_validator("output_dir")
    @classmethod
    def _out(cls, v: str) -> str:
        return check_relative_path(v.rstrip("/"))

    @model_validator(mode="after")
    def _unique(self) -> RelionRun:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("each project file is listed once")
        return self
