"""Describing a directory as a dataset: a checksummed manifest and image sets read from
MRC headers. Runs at the site; only the description goes to the hub, never the data."""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import checksums

from shared.schemas.datasets import (
    ChecksumAlgorithm,
    DatasetCreate,
    ImageSet,
    Manifest,
    ManifestFile,
    check_relative_path,
    manifest_digest,
)

CHUNK = 8 * 2**20


def crc64nvme_b64(value: int) -> str:
    """S3's representation: base64 of the 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def file_checksum(path: Path, algorithm: ChecksumAlgorithm) -> str:
    if algorithm is ChecksumAlgorithm.SHA256:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            crc = checksums.crc64nvme(chunk, crc)
    return crc64nvme_b64(crc)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``root`` as (relative path, full path), in the order of the
    relative paths as strings: the manifest digest's order, so a manifest can be hashed and
    sent as it is read. (A directory ``d`` sorts among its siblings as ``d/``: every path under
    it begins so.) Symlinks are not followed: a link could point outside the dataset."""

    def entries(rel: str, here: Path) -> Iterator[tuple[str, Path]]:
        with os.scandir(here) as it:
            listed = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
        for key, e in sorted(listed, key=lambda k: k[0]):
            if key.endswith("/"):
                yield from entries(rel + key, Path(e.path))
            elif e.is_file(follow_symlinks=False):
                yield check_relative_path(rel + e.name), Path(e.path)

    return entries("", root)


def resolve_root(path: Path) -> Path:
    """The dataset's directory, absolute (its location in the catalog)."""
    root = path.resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    return root


def scan(root: Path, algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC64NVME) -> Manifest:
    """Every regular file under ``root`` (see ``walk``), with its size and checksum."""
    root = resolve_root(root)
    files = [
        ManifestFile(path=rel, size=full.stat().st_size, checksum=file_checksum(full, algorithm)) for rel, full in walk(root)
    ]
    if not files:
        raise ValueError(f"{root} holds no files")
    return Manifest(algorithm=algorithm, files=files, digest=manifest_digest(algorithm.value, files))


_FORMATS = {".mrc": "mrc", ".mrcs": "mrcs", ".tif": "tiff", ".tiff": "tiff", ".eer": "eer", ".star": "star"}


def image_sets(root: Path, manifest: Manifest) -> list[ImageSet]:
    """Group image files by format and read dimensions and pixel size from MRC headers."""
    return image_sets_of(root, (f.path for f in manifest.files))


@dataclass
class _Group:
    count: int
    first: str
    prefix: str


def image_sets_of(root: Path, paths: Iterable[str]) -> list[ImageSet]:
    """``image_sets`` over paths as they come, keeping per format only a count, the first path
    and the common prefix (so a scan of any size describes its image sets in little memory)."""
    import mrcfile

    groups: dict[str, _Group] = {}
    for path in paths:
        fmt = _FORMATS.get(Path(path).suffix.lower())
        if not fmt or fmt == "star":
            continue
        g = groups.get(fmt)
        if g is None:
            groups[fmt] = _Group(1, path, path)
        else:
            g.count += 1
            g.prefix = os.path.commonprefix([g.prefix, path])  # noqa: RUF071 (a name prefix for the file pattern)
    out = []
    for fmt, g in sorted(groups.items()):
        header: dict[str, Any] = {}
        if fmt in ("mrc", "mrcs"):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with mrcfile.open(root / g.first, header_only=True, permissive=True) as m:
                        h = m.header
                        dims = (int(h.nx), int(h.ny), int(h.nz))
                        px = float(m.voxel_size.x)
                    # A file named .mrc without an MRC header (no map ID, absurd sizes): describe nothing.
                    if not caught and all(0 < d < 1_000_000 for d in dims):
                        header = {
                            "width": dims[0],
                            "height": dims[1],
                            "nz": dims[2],
                            "pixel_size_a": round(px, 4) if 0 < px <= 100 else None,
                            "ispg": int(h.ispg),
                        }
            except (OSError, ValueError, OverflowError):
                header = {}
        nz = header.get("nz", 1)
        if fmt == "mrcs":
            category, frames = "particle_stacks", None
        elif fmt == "mrc" and nz > 1 and header.get("ispg", 0) != 0:
            category, frames = "maps", None
        elif fmt == "mrc" and nz > 1:
            category, frames = "raw_movies", nz
        elif fmt == "mrc":
            category, frames = "micrographs", None
        else:
            category, frames = "raw_movies", None
        out.append(
            ImageSet(
                category=category,
                format=fmt,
                count=g.count,
                frames_per_image=frames,
                width=header.get("width"),
                height=header.get("height"),
                pixel_size_a=header.get("pixel_size_a"),
                file_pattern=f"{g.prefix}*{Path(g.first).suffix}",
            )
        )
    return out


def describe(path: Path, meta: dict[str, Any], algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC64NVME) -> DatasetCreate:
    """The registration body for the directory ``path``: its manifest, image sets read from
    the files, and ``meta`` (title, sample, visibility, provenance...)."""
    root = path.resolve()
    manifest = scan(root, algorithm)
    body = dict(meta)
    body.setdefault("image_sets", [s.model_dump() for s in image_sets(root, manifest)])
    return DatasetCreate.model_validate({**body, "manifest": manifest.model_dump(mode="json"), "location": str(root)})
