"""Small but real synthetic cryo-EM datasets, and a job that computes from one.

``write_relion_particles`` makes a RELION data set of the known density below: a
``particles.star`` with an optics table and CTF parameters, and the particle images
projected by RELION's own ``relion_project`` in a few views with random in-plane
rotations, CTF applied and white noise added. ``best_correlation`` says how well an image
(a 2D class average) matches a clean view, over in-plane rotations.

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
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
from PIL import Image

PIXEL_SIZE_A = 1.06
#: The RELION data set: box, pixel size and the views (rot, tilt) its particles show.
RELION_BOX = 40
RELION_PIXEL_A = 2.0
RELION_VIEWS = ((0, 0), (0, 90), (90, 90))


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


def _relion_project(*args: str, cwd: Path) -> None:
    program = shutil.which("relion_project")
    if program is None:
        raise RuntimeError("relion_project is not installed (Debian: apt-get install relion; or `make system-deps` as root)")
    out = subprocess.run([program, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"relion_project {' '.join(args)} failed: {(out.stdout + out.stderr)[-500:]}")


def _optics(size: int) -> list[str]:
    return ["data_optics", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2", "_rlnImagePixelSize #3",
            "_rlnVoltage #4", "_rlnSphericalAberration #5", "_rlnAmplitudeContrast #6", "_rlnImageSize #7",
            "_rlnImageDimensionality #8", f"opticsGroup1 1 {RELION_PIXEL_A:.3f} 300 2.7 0.1 {size} 2", ""]  # fmt: skip


def write_relion_particles(root: Path, truth: Path, count: int = 300, noise: float = 8.0, seed: int = 0) -> int:
    """``count`` particles of ``density`` as a RELION data set under ``root`` (``particles.star``,
    ``Particles/particles.mrcs``), each one of ``RELION_VIEWS`` in a random in-plane rotation,
    with a CTF (defocus 1-2 µm, 300 kV) and white noise of std ``noise`` (the clean
    projections' std is about 5). ``truth`` gets the density and each view's clean projection
    (``view_<rot>_<tilt>.mrc``), which are not part of the data set. Returns ``count``."""
    size = RELION_BOX
    root.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(truth / "density.mrc", overwrite=True) as m:
        m.set_data(density(size))
        m.voxel_size = RELION_PIXEL_A
    rng = np.random.default_rng(seed)
    head = ["loop_", "_rlnAngleRot #1", "_rlnAngleTilt #2", "_rlnAnglePsi #3", "_rlnDefocusU #4", "_rlnDefocusV #5",
            "_rlnDefocusAngle #6", "_rlnOpticsGroup #7"]  # fmt: skip
    truths, particles = [], []
    for i in range(count):
        rot, tilt = RELION_VIEWS[i % len(RELION_VIEWS)]
        defocus = rng.uniform(10_000, 20_000)
        truths.append(f"{rot} {tilt} {rng.uniform(0, 360):.2f} {defocus:.1f} {defocus:.1f} 0 1")
        particles.append(f"{i + 1:06d}@Particles/particles.mrcs {defocus:.1f} {defocus:.1f} 0 1")
    (truth / "angles.star").write_text("\n".join([*_optics(size), "data_particles", *head, *truths]) + "\n")
    (root / "Particles").mkdir(exist_ok=True)
    _relion_project("--i", str(truth / "density.mrc"), "--ang", str(truth / "angles.star"), "--o", "Particles/particles",
                    "--ctf", "--add_noise", "--white_noise", str(noise), "--angpix", str(RELION_PIXEL_A), cwd=root)  # fmt: skip
    # The data set says what a microscope's would: images and CTF, not the orientations (kept in truth/).
    (root / "Particles" / "particles.star").rename(truth / "projected.star")
    loop = ["loop_", "_rlnImageName #1", "_rlnDefocusU #2", "_rlnDefocusV #3", "_rlnDefocusAngle #4", "_rlnOpticsGroup #5"]
    (root / "particles.star").write_text("\n".join([*_optics(size), "data_particles", *loop, *particles]) + "\n")
    for rot, tilt in RELION_VIEWS:
        _relion_project("--i", str(truth / "density.mrc"), "--o", str(truth / f"view_{rot}_{tilt}.mrc"), "--rot", str(rot),
                        "--tilt", str(tilt), "--angpix", str(RELION_PIXEL_A), cwd=truth)  # fmt: skip
    return count


def clean_views(truth: Path) -> dict[str, np.ndarray]:
    """The clean projections ``write_relion_particles`` left in ``truth``, by view name."""
    out = {}
    for rot, tilt in RELION_VIEWS:
        with mrcfile.open(truth / f"view_{rot}_{tilt}.mrc") as m:
            out[f"rot {rot}, tilt {tilt}"] = np.asarray(m.data, dtype=np.float32).reshape(RELION_BOX, RELION_BOX)
    return out


def best_correlation(image: np.ndarray, clean: np.ndarray, step_deg: float = 3.0) -> float:
    """The highest correlation of ``image`` with ``clean`` over in-plane rotations of ``image``
    (a class average sits in whatever rotation the classification gave it)."""
    src = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    angles = np.arange(0.0, 360.0, step_deg)
    return max(correlation(np.asarray(src.rotate(float(a), resample=Image.Resampling.BILINEAR)), clean) for a in angles)


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
