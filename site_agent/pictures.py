"""Small PNGs of what a site holds, made where the data is, for people to look at.

- ``class_pictures``: the 2D class averages of a RELION classification, from the last
  iteration's ``run_it*_classes.mrcs``, each with its share of the particles
  (``_rlnClassDistribution`` in ``run_it*_model.star``), largest share first;
- ``dataset_pictures``: a few particle images of a dataset, read through its particles
  STAR file (``000001@Particles/stack.mrcs``, pixel size from the optics table), or else
  the first images of its MRC files (pixel size from the header).

Each image is scaled to ``THUMB_PX`` a side with its contrast stretched between the 1st and
99th percentile, as 8-bit grey PNG: a few kB each, far under the hub's bounds
(``shared.schemas.pictures``); only these leave the site, never the data.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import warnings
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
from PIL import Image

from shared.schemas.pictures import MAX_PICTURES, MAX_PNG_BYTES, PictureUpload

log = logging.getLogger("cryomesh.agent.pictures")

THUMB_PX = 96
_ITER = re.compile(r"_it(\d+)_classes\.mrcs$")


def png_of(image: np.ndarray, size: int = THUMB_PX) -> bytes:
    """An 8-bit grey PNG of ``image`` scaled to ``size`` pixels a side, contrast stretched."""
    a = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(a, [1, 99]) if a.size else (0.0, 1.0)
    scaled = np.clip((a - lo) / ((hi - lo) or 1.0), 0, 1)
    img = Image.fromarray((scaled * 255).astype(np.uint8), mode="L").resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    if len(data) > MAX_PNG_BYTES:
        raise ValueError(f"a {size}px thumbnail took {len(data)} bytes")
    return data


def _picture(name: str, image: np.ndarray, caption: str, share: float | None, pixel: float | None) -> PictureUpload:
    return PictureUpload(
        name=name, caption=caption, share=share, pixel_size_a=pixel,
        png_base64=base64.b64encode(png_of(image)).decode(),
    )  # fmt: skip


def _table(path: Path, block: str) -> list[dict[str, str]]:
    """The rows of one loop of a STAR file, as {column without '_rln': value}."""
    doc = gemmi.cif.read_file(str(path))
    b = doc.find_block(block)
    if b is None:
        return []
    for item in b:
        if item.loop is not None:
            tags = [t.removeprefix("_rln") for t in item.loop.tags]
            width = len(tags)
            values = list(item.loop.values)
            return [dict(zip(tags, values[i : i + width], strict=True)) for i in range(0, len(values), width)]
    return []


def _value(path: Path, block: str, tag: str) -> str | None:
    b = gemmi.cif.read_file(str(path)).find_block(block)
    return b.find_value(tag) if b is not None else None


def last_classes(outdir: Path) -> tuple[Path, Path] | None:
    """The last iteration's classes stack and its model STAR under ``outdir``."""
    found = [(int(m[1]), p) for p in outdir.rglob("*_classes.mrcs") if (m := _ITER.search(p.name))]
    if not found:
        return None
    _, stack = max(found)
    model = stack.with_name(stack.name.replace("_classes.mrcs", "_model.star"))
    return (stack, model) if model.is_file() else None


def class_shares(model: Path) -> list[float]:
    """Each class's share of the particles, from a ``run_it*_model.star``."""
    return [float(r["ClassDistribution"]) for r in _table(model, "model_classes")]


def class_pictures(outdir: Path) -> list[PictureUpload]:
    """The class averages of the classification in ``outdir``, largest share first; [] if none."""
    found = last_classes(outdir)
    if found is None:
        return []
    stack, model = found
    shares = class_shares(model)
    pixel_text = _value(model, "model_general", "_rlnPixelSize")
    pixel = float(pixel_text) if pixel_text else None
    with mrcfile.open(stack, permissive=True) as m:
        classes = np.asarray(m.data, dtype=np.float32)
    classes = classes if classes.ndim == 3 else classes[None]
    order = sorted(range(len(classes)), key=lambda k: -(shares[k] if k < len(shares) else 0.0))[:MAX_PICTURES]
    out = []
    for k in order:
        share = shares[k] if k < len(shares) else None
        caption = f"class {k + 1}" + (f": {share:.1%} of the particles" if share is not None else "")
        out.append(_picture(f"class-{k + 1:03d}", classes[k], caption, share, pixel))
    return out


def _star_particles(root: Path, limit: int) -> list[PictureUpload]:
    for star in sorted(root.rglob("*.star")):
        try:
            rows = _table(star, "particles")
        except (RuntimeError, ValueError):
            continue
        if not rows or "ImageName" not in rows[0]:
            continue
        optics = {r.get("OpticsGroup"): r for r in _table(star, "optics")}
        out = []
        for i, row in enumerate(rows[:limit]):
            index, _, name = row["ImageName"].partition("@")
            with mrcfile.mmap(root / name, permissive=True) as m:
                data = np.asarray(m.data)
                image = data[int(index) - 1] if data.ndim == 3 else data
            group = optics.get(row.get("OpticsGroup"), {})
            pixel = float(group["ImagePixelSize"]) if "ImagePixelSize" in group else None
            where = f"{name} #{int(index)}"
            out.append(_picture(f"particle-{i + 1:03d}", image, f"particle {i + 1} ({where}, {star.name})", None, pixel))
        return out
    return []


def _mrc_images(root: Path, limit: int) -> list[PictureUpload]:
    out: list[PictureUpload] = []
    for path in sorted([*root.rglob("*.mrc"), *root.rglob("*.mrcs")]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mrcfile.mmap(path, permissive=True) as m:
                data = None if m.data is None else np.array(m.data)
                pixel = float(m.voxel_size.x) or None
        if caught or data is None or data.ndim not in (2, 3) or 0 in data.shape:
            continue  # named .mrc but not a readable MRC image (e.g. raw bytes): nothing to show
        for image in data if data.ndim == 3 else [data]:
            out.append(_picture(f"image-{len(out) + 1:03d}", image, f"{path.relative_to(root)}", None, pixel))
            if len(out) == limit:
                return out
    return out


def dataset_pictures(root: Path, limit: int = 6) -> list[PictureUpload]:
    """A few thumbnails of a dataset: class averages if it is a classification's output, else
    particles through its STAR file, else the first MRC images; [] when it has no images."""
    return class_pictures(root) or _star_particles(root, limit) or _mrc_images(root, limit)
