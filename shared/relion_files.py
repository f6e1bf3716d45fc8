"""Moving RELION project files through an exchange directory, checked by SHA-256 on arrival.

The exchange of a home site holds ``relion/cas/<sha256>`` (project files, published once
whatever their name, so a file already there is not sent again) and
``relion/results/<job id>/`` (a finished job's output directory and ``manifest.json``).
Used on both sides: the researcher's CLI publishes and fetches results, the running site's
runner fetches inputs and publishes results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from shared.schemas.datasets import check_relative_path

CHUNK = 4 * 2**20
#: What a RELION job writes for its pipeline; the submitting side writes its own once the output is home.
PIPELINE_FLAGS = frozenset(
    {"RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED", "RELION_JOB_ABORT_NOW"}
)


class ChecksumMismatch(OSError):
    """A copied file is not the file the manifest names (size or SHA-256 differ)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_checked(src: Path, dest: Path, size: int, sha256: str) -> None:
    """Copy ``src`` to ``dest`` through a temporary file, hashing as it goes; ``dest``
    appears only when size and checksum match, so a file in place is always a good one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h, n = hashlib.sha256(), 0
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if n != size or h.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"{src}: expected {size} bytes with sha256 {sha256[:12]}…, got {n} bytes {h.hexdigest()[:12]}…"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def inside(root: Path, rel: str) -> Path:
    """``root/rel``, refused when ``rel`` or a symbolic link on the way leads outside ``root``."""
    check_relative_path(rel)
    root = root.resolve()
    full = root / rel
    if not full.parent.resolve().is_relative_to(root) or full.is_symlink():
        raise ValueError(f"{rel!r} leads outside {root}")
    return full


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def publish_results(outdir: Path, dest: Path, exit_code: int) -> dict[str, Any]:
    """Copy a job's output directory to ``dest/files`` and write ``dest/manifest.json`` last:
    a manifest present means every file it lists is there, checked."""
    files = []
    for path in sorted(p for p in outdir.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(outdir).as_posix()
        if rel in PIPELINE_FLAGS:
            continue
        digest = sha256_of(path)
        size = path.stat().st_size
        copy_checked(path, dest / "files" / rel, size, digest)
        files.append({"path": rel, "size": size, "sha256": digest})
    manifest = {"exit_code": exit_code, "files": files}
    write_json_atomic(dest / "manifest.json", manifest)
    return manifest
