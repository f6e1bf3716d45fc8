"""Which project files a RELION job reads, found from its command lines and STAR files.

Every argument that names an existing file is an input (``--i``, ``--ref``,
``--solvent_mask``, ``--ios``, ``--continue``…, whatever the program calls it), and so is
every file a STAR input names, followed through STAR files that name other STAR files
(an optimiser names its model and data). In a table of particles (``rlnImageName``) only
the images are read, so only they are sent (not, say, every micrograph the particles
came from); in other tables every file named that exists is sent (micrographs, movies,
gain references and MTFs of an optics table). ``000123@Stacks/a.mrcs`` names
``Stacks/a.mrcs``. A path that is absolute, climbs out with '..', or leads out through a
symbolic link is refused: the job runs in a copy of the project and nothing else.

The STAR reader is the small part of the format RELION writes (``data_`` blocks, ``loop_``
tables with ``_rlnName #n`` labels, ``_rlnName value`` pairs); starfile, the usual
library, needs pandas, which nothing else here does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from shared.schemas.relion import RelionCommand

#: Arguments that name what the job writes, not what it reads.
OUTPUT_OPTIONS = frozenset({"--o", "--pipeline_control"})
_FILE_SUFFIXES = (".star", ".mrc", ".mrcs", ".tif", ".tiff", ".eer", ".spi", ".map", ".dat", ".txt", ".gain")


class OutsideProject(ValueError):
    """A command or STAR file names a file outside the project directory."""


def star_columns(path: Path) -> Iterator[tuple[str, list[str]]]:
    """For each table (or block of pairs) of a STAR file: its labels' values, row by row,
    as (label, values). Good enough for RELION's own files; quoted values are not split."""
    labels: list[str] = []
    rows: list[list[str]] = []
    in_loop = False

    def flush() -> Iterator[tuple[str, list[str]]]:
        for i, label in enumerate(labels):
            yield label, [r[i] for r in rows if i < len(r)]

    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("_") else raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_") or line == "loop_":
            yield from flush()
            labels, rows, in_loop = [], [], line == "loop_"
        elif line.startswith("_"):
            parts = line.split(None, 1)
            if in_loop and not rows:
                labels.append(parts[0])
            else:  # a pair outside a loop
                yield parts[0], [parts[1].strip() if len(parts) > 1 else ""]
        elif in_loop:
            rows.append(line.split())
    yield from flush()


def _relative(project: Path, name: str, where: str) -> str | None:
    """``name`` relative to the project if it is a file inside it; None if it is no file;
    OutsideProject if it is outside."""
    if "@" in name:
        name = name.split("@", 1)[1]
    if not name or name.startswith("-"):
        return None
    full = Path(name) if os.path.isabs(name) else project / name
    if not full.is_file():
        if os.path.isabs(name) and name.lower().endswith(_FILE_SUFFIXES):
            raise OutsideProject(f"{where} names {name}, an absolute path outside the project {project}")
        return None
    if not full.resolve().is_relative_to(project.resolve()):
        raise OutsideProject(f"{where} names {name}, which is outside the project {project}; copy or link it into the project")
    rel = os.path.normpath(os.path.relpath(full, project))
    if rel.startswith(".."):
        raise OutsideProject(f"{where} names {name}, which is outside the project {project}")
    return Path(rel).as_posix()


def _from_star(project: Path, rel: str, found: dict[str, None]) -> None:
    columns = list(star_columns(project / rel))
    labels = {label for label, _ in columns}
    for label, values in columns:
        if "_rlnImageName" in labels and label != "_rlnImageName" and label in _PARTICLE_SIDE:
            continue  # particles name the micrographs they came from; classifying them reads only the images
        for value in dict.fromkeys(values):
            if "/" not in value and "." not in value:
                continue
            child = _relative(project, value, f"{rel} ({label})")
            if child is not None and child not in found:
                found[child] = None
                if child.endswith(".star"):
                    _from_star(project, child, found)


#: Columns of a particle table that name where the particles came from, not what is read.
_PARTICLE_SIDE = frozenset({"_rlnMicrographName", "_rlnMicrographMovieName", "_rlnCtfImage", "_rlnOriginalParticleName"})


def project_inputs(project: Path, commands: list[RelionCommand], output_dir: str) -> list[str]:
    """Every project file the commands read, relative to ``project``, in a stable order."""
    found: dict[str, None] = {}
    for cmd in commands:
        skip = False
        for arg in cmd.args:
            if skip or arg in OUTPUT_OPTIONS:
                skip = arg in OUTPUT_OPTIONS
                continue
            rel = _relative(project, arg, f"{cmd.program} {arg}")
            if rel is None or rel in found or rel.startswith(output_dir.rstrip("/") + "/run_submit"):
                continue
            found[rel] = None
            if rel.endswith(".star"):
                _from_star(project, rel, found)
    return list(found)
