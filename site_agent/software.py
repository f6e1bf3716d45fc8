"""What RELION this site can run, measured rather than declared.

The agent looks for ``relion_refine`` on its PATH and in the install dirs of
``[software] relion_dirs`` and asks each build it finds:

- its **version**: ``relion_refine --version`` prints ``RELION version: 3.1.3`` (RELION 4
  and 5 add ``-commit-<hash>``); the leading numbers are the version, the rest goes in notes;
- **CPU or GPU build**: the same command's ``Precision:`` line names ``CUDA-ACC`` in a CUDA
  build (``Precision: BASE=double, CUDA-ACC=single``); a build whose programs link
  ``libcudart`` (``ldd``) is a CUDA build too. ``--help`` is no guide: a CPU build lists
  ``--gpu`` as well;
- the **CUDA architectures** of a GPU build: ``cuobjdump --list-elf`` on the program names
  one cubin per architecture (``...sm_86.cubin``); cuobjdump is looked for in the install
  dir, on PATH, in ``$CUDA_HOME/bin`` and ``/usr/local/cuda/bin``. Without it the build is
  reported as a CUDA build of unknown architectures (a site admin can still declare them);
- **MPI**: ``relion_refine_mpi`` beside it and an MPI launcher (``mpirun`` or ``mpiexec``).

Each probe runs with a timeout; a build that does not answer is left out and logged.

The container runtimes installed (``site_agent.containers``) and the images the site runs
are reported with the same list (``container_software``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from shared.schemas.jobs import JobSpec
from shared.schemas.software import MeasuredSoftware
from site_agent import containers
from site_agent.config import SoftwareSection, TesSection

log = logging.getLogger("cryomesh.agent.software")

PROBE_TIMEOUT_S = 20
_VERSION = re.compile(r"RELION version:\s*v?(\d+(?:\.\d+)*)(\S*)")
_SM = re.compile(r"sm_(\d+)(\d)\b")


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env, check=False)
    return out.stdout + out.stderr


def _bin_dir(d: Path) -> Path:
    return d / "bin" if not (d / "relion_refine").exists() and (d / "bin" / "relion_refine").exists() else d


def _which(name: str, first: Path, path: str | None) -> str | None:
    if (first / name).is_file() and os.access(first / name, os.X_OK):
        return str(first / name)
    cuda_home = os.environ.get("CUDA_HOME")
    extra = [f"{cuda_home}/bin"] if cuda_home else []
    return shutil.which(name, path=os.pathsep.join([path or os.environ.get("PATH", ""), *extra, "/usr/local/cuda/bin"]))


def cuda_archs(listing: str) -> list[str]:
    """``cuobjdump --list-elf`` output -> ['8.0', '8.6'] (sm_80, sm_86)."""
    return sorted({f"{m[1]}.{m[2]}" for m in _SM.finditer(listing)}, key=lambda a: tuple(int(x) for x in a.split(".")))


def probe_relion(bin_dir: Path, path: str | None = None) -> MeasuredSoftware | None:
    """Measure the RELION build whose programs are in ``bin_dir``; None when there is none."""
    refine = bin_dir / "relion_refine"
    if not (refine.is_file() and os.access(refine, os.X_OK)):
        return None
    env = {**os.environ, "PATH": path} if path is not None else None
    try:
        printed = _run([str(refine), "--version"], env)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s --version failed: %s", refine, exc)
        return None
    found = _VERSION.search(printed)
    if not found:
        log.warning("%s --version printed no RELION version: %r", refine, printed[:200])
        return None
    notes = [f"RELION {found[1]}{found[2]}" if found[2] else f"RELION {found[1]}"]
    precision = next((line.strip() for line in printed.splitlines() if line.startswith("Precision:")), "")
    cuda = "CUDA-ACC" in precision
    ldd = shutil.which("ldd")
    if not cuda and ldd:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cuda = "libcudart" in _run([ldd, str(refine)])
    archs: list[str] = []
    if cuda:
        cuobjdump = _which("cuobjdump", bin_dir, path)
        if cuobjdump is None:
            notes.append("CUDA build; architectures unknown (no cuobjdump)")
        else:
            try:
                archs = cuda_archs(_run([cuobjdump, "--list-elf", str(refine)], env))
            except (OSError, subprocess.SubprocessError) as exc:
                notes.append(f"CUDA build; cuobjdump failed: {exc}"[:200])
    mpi = (bin_dir / "relion_refine_mpi").is_file() and any(_which(launcher, bin_dir, path) for launcher in ("mpirun", "mpiexec"))
    return MeasuredSoftware(
        name="relion", version=found[1], build="cuda" if cuda else "cpu", cuda_archs=archs, mpi=mpi,
        path=str(bin_dir), notes="; ".join(notes),
    )  # fmt: skip


def discover_software(cfg: SoftwareSection, path: str | None = None) -> list[MeasuredSoftware]:
    """Every RELION build in the configured dirs and on PATH (``path``: instead of $PATH), each once."""
    dirs = [_bin_dir(d) for d in cfg.relion_dirs]
    if cfg.search_path and (on_path := shutil.which("relion_refine", path=path)):
        dirs.append(Path(on_path).parent)
    seen: set[Path] = set()
    out = []
    for d in dirs:
        real = (d / "relion_refine").resolve()
        if real in seen:
            continue
        seen.add(real)
        if (m := probe_relion(d, path)) is not None:
            out.append(m)
        elif d in [_bin_dir(c) for c in cfg.relion_dirs]:
            log.warning("no runnable relion_refine in %s (software.relion_dirs)", d)
    return out


def choose_build(found: list[MeasuredSoftware], spec: JobSpec) -> MeasuredSoftware | None:
    """The build a job of ``spec`` runs with: one in its version range and of the CUDA
    architecture it names (a GPU build for a GPU job), newest first; None: none fits."""
    wanted = next((s for s in spec.software if s.name.lower() == "relion"), None)

    def fits(m: MeasuredSoftware) -> bool:
        if m.name != "relion":
            return False
        try:
            if wanted and wanted.version and Version(m.version) not in SpecifierSet(wanted.version):
                return False
        except (InvalidVersion, InvalidSpecifier):
            return False
        if wanted and wanted.cuda_arch and wanted.cuda_arch not in m.cuda_archs:
            return False
        return m.build == "cuda" if spec.resources.gpus else True

    def newest(m: MeasuredSoftware) -> tuple[bool, Version]:
        # A CPU job prefers a CPU build (it leaves the GPU build's nodes to GPU work).
        return (spec.resources.gpus == 0 and m.build == "cpu", Version(m.version))

    fitting = [m for m in found if fits(m)]
    return max(fitting, key=newest) if fitting else None


def container_software(tes: TesSection, path: str | None = None) -> list[MeasuredSoftware]:
    """The container runtimes installed here (``podman 4.3.1``) and the images this site runs,
    as software ``image:<pattern>`` whose version says where: the runtime's name, or 'host'
    (``[tes] host_images``). The broker matches a task's image against these patterns."""
    out = []
    for p in containers.detect(path):
        if p.runtime is None:
            log.debug("no container runtime %s: %s", p.name, p.why)
            continue
        used = tes.container_runtime is not None and tes.container_runtime.name == p.runtime.name
        out.append(MeasuredSoftware(
            name=p.name, version=p.runtime.version, build="runtime", path=os.path.dirname(p.runtime.program),
            notes="container runtime" + ("; runs this site's [tes] container_images" if used else ""),
        ))  # fmt: skip
    if (rt := tes.container_runtime) is not None:
        for pattern in tes.container_images:
            file = next((str(f) for i, f in tes.image_files.items() if fnmatch.fnmatchcase(i, pattern)), "")
            out.append(MeasuredSoftware(name=f"image:{pattern}", version=rt.name, build="container", path=file,
                                        notes=f"runs in {rt.name} {rt.version}"))  # fmt: skip
    for pattern in tes.host_images:
        out.append(MeasuredSoftware(name=f"image:{pattern}", version="host", build="host", path="",
                                    notes="runs on the site's hosts ([tes] host_images)"))  # fmt: skip
    return out
