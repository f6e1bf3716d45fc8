"""Container runtimes at a site: which are installed, and the command lines that run a TES
executor in one.

**Detection.** A runtime counts as installed when its program is on PATH *and* answers a
version probe within a few seconds: ``apptainer --version``, ``singularity --version``,
``podman --version``; for Docker ``docker version --format {{.Server.Version}}``, because
the Docker client alone runs nothing: without a daemon that answers it is not a runtime
(``Probe.why`` says so). The agent reports what it found with its software (``podman
4.3.1``), so the hub and the dashboard show it.

**Running.** One container per executor: podman and docker run ``run --rm --name <name>
--entrypoint ''`` (the TES command is the whole argv), ``--network none`` unless the site's
admin allows the network, the task's directories bind-mounted at the absolute paths the task
names, ``--workdir``, ``-e`` per variable and ``-i`` when the executor reads stdin (the
runner connects the client's stdin/stdout/stderr to the task's files). Apptainer and
Singularity run ``exec --containall --pwd ... --env ... --bind ...`` (and ``--net --network
none`` without network) on the site's ``.sif`` file for the image, or ``docker://<image>``.

**Local images.** A site without registry access names an image file per image (``[tes]
image_files``); before the first run the runner loads it: an OCI or docker archive with
``load`` (tagged with the task's image name), a plain root file system tarball with
``import``. Runs then use ``--pull never``, so nothing is fetched from a registry.

**Cancel.** podman and docker run a container away from the client's process group (conmon,
the daemon): a signal to the job does not reach it, so the runner removes it by name
(``stop_argv``). An Apptainer container is a child of its ``exec``: the job's signal ends it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shared.schemas.software import CONTAINER_RUNTIMES

#: Runtimes the agent knows, in the order ``runtime = "auto"`` prefers them.
RUNTIMES = CONTAINER_RUNTIMES
OCI_RUNTIMES = ("podman", "docker")
PROBE_TIMEOUT_S = 15
_VERSION = re.compile(r"(\d+(?:\.\d+)+)")
_LOADED = re.compile(r"Loaded image(?:\(s\))?(?: ID)?:\s*(\S+)")
_PROBES: dict[str, list[str]] = {
    "apptainer": ["--version"],
    "singularity": ["--version"],
    "podman": ["--version"],
    "docker": ["version", "--format", "{{.Server.Version}}"],
}


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    program: str


@dataclass(frozen=True)
class Probe:
    """What looking for one runtime found: the runtime, or why there is none."""

    name: str
    runtime: Runtime | None
    why: str = ""


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool = False


class ContainerError(Exception):
    """An image could not be made ready (its file would not load)."""


def probe(name: str, path: str | None = None) -> Probe:
    """Look for runtime ``name`` on ``path`` (default $PATH) and ask it for its version."""
    program = shutil.which(name, path=path)
    if program is None:
        return Probe(name, None, f"{name} is not on PATH")
    argv = [program, *_PROBES[name]]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe(name, None, f"{program} did not answer `{' '.join(argv[1:])}`: {exc}")
    found = _VERSION.search(out.stdout)
    if out.returncode != 0 or found is None:
        said = (out.stderr or out.stdout).strip().splitlines()
        return Probe(name, None, f"{program} did not answer `{' '.join(argv[1:])}`: {said[-1] if said else out.returncode}"[:300])
    return Probe(name, Runtime(name, found[1], program))


def detect(path: str | None = None) -> list[Probe]:
    """Every runtime the agent knows, found or not (with why not)."""
    return [probe(name, path) for name in RUNTIMES]


def choose(wanted: str, path: str | None = None) -> Runtime:
    """The runtime ``[tes] runtime`` names ('auto': the first installed); ValueError saying
    what was looked for when there is none."""
    probes = [probe(wanted, path)] if wanted != "auto" else detect(path)
    for p in probes:
        if p.runtime is not None:
            return p.runtime
    raise ValueError("; ".join(p.why for p in probes))


def container_name(workdir: Path, n: int) -> str:
    """``cryomesh-<work dir name>-<executor>``: unique per attempt, so a canceled or
    restarted runner finds its container by name."""
    return "cryomesh-" + re.sub(r"[^A-Za-z0-9_.-]", "-", workdir.name) + f"-{n}"


def run_argv(
    rt: Runtime, *, name: str, image: str, command: list[str], workdir: str | None, env: dict[str, str],
    mounts: list[Mount], stdin: bool, network: bool, image_file: str | None,
) -> list[str]:  # fmt: skip
    """The command that runs one executor in ``rt``."""
    if rt.name in OCI_RUNTIMES:
        argv = [rt.program, "run", "--rm", "--name", name, "--entrypoint", ""]
        argv += [] if network else ["--network", "none"]
        argv += ["-i"] if stdin else []
        argv += ["--pull", "never"] if image_file else []
        argv += ["--workdir", workdir] if workdir else []
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        for m in mounts:
            argv += ["-v", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
        return [*argv, image, *command]
    argv = [rt.program, "exec", "--containall", "--pwd", workdir or "/"]
    argv += [] if network else ["--net", "--network", "none"]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    for m in mounts:
        argv += ["--bind", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
    return [*argv, image_file or f"docker://{image}", *command]


def stop_argv(rt: Runtime, name: str) -> list[str] | None:
    """The command that kills and removes a running container (None: the job's signal does it)."""
    if rt.name == "podman":
        return [rt.program, "rm", "--force", "--time", "0", name]
    if rt.name == "docker":
        return [rt.program, "rm", "--force", name]
    return None


def is_image_archive(path: Path) -> bool:
    """An OCI (``oci-layout``) or docker (``manifest.json``) archive, not a root file system."""
    try:
        with tarfile.open(path) as tar:
            return any(m.name.removeprefix("./") in ("oci-layout", "manifest.json") for m in tar)
    except (OSError, tarfile.TarError) as exc:
        raise ContainerError(f"image file {path}: {exc}") from None


def ensure_image(rt: Runtime, image: str, image_file: str) -> None:
    """Make ``image`` known to podman/docker from the site's file, unless it already is."""
    if rt.name not in OCI_RUNTIMES:
        return  # apptainer runs the .sif file itself
    if _call([rt.program, "image", "inspect", "--format", "{{.Id}}", image]).returncode == 0:
        return
    if is_image_archive(Path(image_file)):
        out = _call([rt.program, "load", "-i", image_file])
        loaded = _LOADED.findall(out.stdout)
        if out.returncode != 0 or not loaded:
            raise ContainerError(f"{rt.name} load -i {image_file}: {(out.stderr or out.stdout).strip()[-300:]}")
        out = _call([rt.program, "tag", loaded[0], image])
    else:
        out = _call([rt.program, "import", image_file, image])
    if out.returncode != 0:
        raise ContainerError(f"{rt.name} could not make {image} from {image_file}: {out.stderr.strip()[-300:]}")


def _call(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
