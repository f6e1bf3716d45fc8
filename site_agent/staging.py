"""A RELION job's work dir laid out as a RELION project holding its inputs.

RELION resolves the paths inside a STAR file (``000001@Particles/stack.mrcs``) against the
directory it runs in, the project directory, not against the STAR file. So before a
``relion.*`` job starts, each entry at the top of each input dataset is linked into the
job's work dir under its own name: the job's parameters then name inputs as they are
named inside the dataset (``--i particles.star``) and every path in them resolves. Links,
not copies: the replica stays the one verified copy, and nothing is written into it.
"""

from __future__ import annotations

from pathlib import Path


def link_inputs(workdir: Path, inputs: list[str]) -> list[str]:
    """Link the top-level entries of each input dir into ``workdir``; returns the names linked.

    A name two inputs share is an error: which one the job would read is not for the agent to guess."""
    workdir.mkdir(parents=True, exist_ok=True)
    linked: list[str] = []
    for src in inputs:
        for entry in sorted(Path(src).iterdir()):
            link = workdir / entry.name
            if link.is_symlink() and link.resolve() == entry.resolve():
                continue  # linked before an agent restart
            if link.exists() or link.is_symlink():
                raise FileExistsError(f"input entry {entry.name!r} of {src} clashes with {link}")
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
            linked.append(entry.name)
    return linked
