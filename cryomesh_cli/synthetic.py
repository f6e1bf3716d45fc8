"""A small but real synthetic cryo-EM dataset, and a job that computes from it.

``write_particles`` projects a known 3D density (a handful of Gaussian blobs, a stand-in
for a protein complex) along one axis, adds Gaussian noise far stronger than the signal,
and writes the noisy particle images as MRC stacks with a pixel size in the header.

``python -m cryomesh_cli.synthetic average`` is the job: it reads every particle image
under ``$CRYOMESH_INPUT_DIR``, writes their 2D average to ``$CRYOMESH_OUTPUT_DIR`` as an
MRC file, and prints how many images went in. Averaging N images with independent noise
raises the signal-to-noise ratio by about sqrt(N), so the average correlates with the
clean projection far better than any single image does; the demo measures exactly that.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mrcfile
import numpy as np

PIXEL_SIZE_A = 1.06


def density(size: int = 64, seed: int = 7) -> np.ndarray:
    """A 3D map of a few Gaussian blobs of different sizes and weights."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size, size, size), dtype=np.float32) - size / 2
    vol = np.zeros((size, size, size), dtype=np.float32)
    for _ in range(6):
        centre = rng.uniform(-size / 5, size / 5, 3)
        sigma = rng.uniform(size / 16, size / 8)
        weight = rng.uniform(0.5, 1.5)
        d2 = sum((grid[i] - centre[i]) ** 2 for i in range(3))
        vol += weight * np.exp(-d2 / (2 * sigma**2))
    return vol


def projection(size: int = 64) -> np.ndarray:
    """The clean projection of ``density`` along z, normalised to zero mean and unit variance."""
    p = density(size).sum(axis=0)
    out: np.ndarray = ((p - p.mean()) / p.std()).astype(np.float32)
    return out


def write_particles(root: Path, stacks: int = 4, per_stack: int = 64, size: int = 64, noise: float = 3.0, seed: int = 0) -> int:
    """Noisy copies of ``projection`` in ``stacks`` MRC stacks under ``root/Particles``; returns the image count."""
    rng = np.random.default_rng(seed)
    clean = projection(size)
    out = root / "Particles"
    out.mkdir(parents=True, exist_ok=True)
    for s in range(stacks):
        images = clean[None] + rng.normal(0, noise, (per_stack, size, size)).astype(np.float32)
        with mrcfile.new(out / f"particles_{s:03d}.mrcs", overwrite=True) as m:
            m.set_data(images.astype(np.float32))
            m.set_image_stack()
            m.voxel_size = PIXEL_SIZE_A
    (root / "particles.star").write_text(
        "data_particles\nloop_\n_rlnImageName #1\n"
        + "".join(f"{i + 1:06d}@Particles/particles_{s:03d}.mrcs\n" for s in range(stacks) for i in range(per_stack))
    )
    return stacks * per_stack


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def average(input_dir: Path, output_dir: Path) -> dict[str, object]:
    """The 2D average of every particle image in the MRC files under ``input_dir``."""
    total: np.ndarray | None = None
    count = 0
    first: np.ndarray | None = None
    pixel = None
    for path in sorted(input_dir.rglob("*.mrc*")):
        with mrcfile.open(path, permissive=True) as m:
            data = np.asarray(m.data, dtype=np.float64)
            pixel = pixel or float(m.voxel_size.x)
        images = data if data.ndim == 3 else data[None]
        total = images.sum(axis=0) if total is None else total + images.sum(axis=0)
        first = images[0] if first is None else first
        count += images.shape[0]
    if total is None or first is None:
        raise SystemExit(f"no MRC images under {input_dir}")
    avg = (total / count).astype(np.float32)
    output_dir.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(output_dir / "average_2d.mrc", overwrite=True) as m:
        m.set_data(avg)
        m.voxel_size = pixel or PIXEL_SIZE_A
    summary: dict[str, object] = {"images": count, "output": "average_2d.mrc", "pixel_size_a": pixel}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str]) -> int:
    if argv[:1] != ["average"]:
        print("usage: python -m cryomesh_cli.synthetic average  (reads $CRYOMESH_INPUT_DIR, writes $CRYOMESH_OUTPUT_DIR)")
        return 2
    src, dst = os.environ.get("CRYOMESH_INPUT_DIR"), os.environ.get("CRYOMESH_OUTPUT_DIR")
    if not src or not dst:
        print("CRYOMESH_INPUT_DIR and CRYOMESH_OUTPUT_DIR must be set (the agent sets them)", file=sys.stderr)
        return 2
    print(json.dumps(average(Path(src), Path(dst))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
