"""Real rootful podman for tests, with nothing from a registry and nothing shared.

Each test gets its own ``containers.conf`` and ``storage.conf`` (``CONTAINERS_CONF``,
``CONTAINERS_STORAGE_CONF``): storage (vfs) and run state under its temp dir, so tests under
pytest-xdist share no image store or lock. The settings are what this machine needs (a VM
whose root lacks CAP_SYS_RESOURCE and whose cgroups are hybrid): runc (crun 1.8 refuses
hybrid cgroups), the cgroupfs manager, ulimits no higher than the agent's own (podman would
raise them to the maximum, which needs CAP_SYS_RESOURCE), events in a file, no network.

The image is built here: a root file system of Debian's ``busybox-static`` (/bin/busybox
and its applets as symlinks) in a tarball, which the site's ``[tes] image_files`` names and
the runner imports (``podman import``) at the first task.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

APPLETS = ("sh", "cat", "echo", "ls", "sleep", "wc", "pwd", "env", "mkdir", "id", "tr", "test")


def require_podman() -> str:
    """podman's path; a skip without it (a failure under CI=true, where `make test` installs it)."""
    found = shutil.which("podman")
    if found and shutil.which("runc") and Path("/bin/busybox").is_file():
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("podman, runc and busybox-static are missing (make system-deps installs them)")
    pytest.skip("podman, runc or busybox-static is not installed (make system-deps installs them)")


def podman_env(tmp: Path) -> dict[str, str]:
    """The environment variables that point podman at this test's own configuration and storage."""
    base = tmp / "podman"
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    (base / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "graph"}"\nrunroot = "{base / "run"}"\n')
    (base / "containers.conf").write_text(
        '[containers]\nnetns = "none"\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n\n'
        f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{base / "events.log"}"\ntmp_dir = "{base / "tmp"}"\n'
    )
    return {"CONTAINERS_CONF": str(base / "containers.conf"), "CONTAINERS_STORAGE_CONF": str(base / "storage.conf")}


def busybox_rootfs(tmp: Path) -> Path:
    """A root file system tarball of busybox-static: /bin/busybox, its applets, /tmp."""
    tarball = tmp / "busybox-rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        for d in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return tarball


def containers(env: dict[str, str]) -> list[str]:
    """Names of the containers podman has (running or not) in this test's storage."""
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout.split()
