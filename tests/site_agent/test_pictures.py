"""The agent's thumbnails: class averages with their shares, particles through a STAR file,
plain MRC images; small PNGs within the hub's bounds. (A real Class2D's output is pictured
in tests/test_relion_sites.py; here the files are written by hand in RELION's layout.)"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import mrcfile
import numpy as np
from PIL import Image

from shared.schemas.pictures import MAX_PNG_BYTES
from site_agent.pictures import class_pictures, dataset_pictures, last_classes

MODEL = """
data_model_general

_rlnReferenceDimensionality 2
_rlnPixelSize 2.500000

data_model_classes

loop_
_rlnReferenceImage #1
_rlnClassDistribution #2
000001@out/run_it{it:03d}_classes.mrcs 0.200000
000002@out/run_it{it:03d}_classes.mrcs 0.700000
000003@out/run_it{it:03d}_classes.mrcs 0.100000
"""


def classification(out: Path, iterations: int = 2) -> None:
    out.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for it in range(1, iterations + 1):
        with mrcfile.new(out / f"run_it{it:03d}_classes.mrcs") as m:
            m.set_data(rng.normal(size=(3, 40, 40)).astype(np.float32))
        (out / f"run_it{it:03d}_model.star").write_text(MODEL.format(it=it))


def decoded(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert len(data) <= MAX_PNG_BYTES
    return Image.open(io.BytesIO(data))


def test_class_averages_of_the_last_iteration_largest_share_first(tmp_path: Path) -> None:
    classification(tmp_path / "out", iterations=12)
    found = last_classes(tmp_path / "out")
    assert found is not None and [p.name for p in found] == ["run_it012_classes.mrcs", "run_it012_model.star"], (
        "12 > 2 as numbers, not as text"
    )
    pictures = class_pictures(tmp_path / "out")
    assert [p.name for p in pictures] == ["class-002", "class-001", "class-003"]
    assert [p.share for p in pictures] == [0.7, 0.2, 0.1] and {p.pixel_size_a for p in pictures} == {2.5}
    assert pictures[0].caption == "class 2: 70.0% of the particles"
    image = decoded(pictures[0].png_base64)
    assert image.format == "PNG" and image.size == (96, 96) and image.mode == "L"


def test_particles_through_the_star_file_with_the_optics_pixel_size(tmp_path: Path) -> None:
    (tmp_path / "Particles").mkdir()
    with mrcfile.new(tmp_path / "Particles" / "p.mrcs") as m:
        m.set_data(np.arange(8 * 32 * 32, dtype=np.float32).reshape(8, 32, 32))
    (tmp_path / "particles.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 1.06\n\n"
        "data_particles\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n"
        + "".join(f"{i:06d}@Particles/p.mrcs 1\n" for i in (3, 1, 2))
    )
    pictures = dataset_pictures(tmp_path)
    assert [p.name for p in pictures] == ["particle-001", "particle-002", "particle-003"]
    assert pictures[0].caption == "particle 1 (Particles/p.mrcs #3, particles.star)" and pictures[0].pixel_size_a == 1.06


def test_plain_mrc_images_and_a_dataset_without_images(tmp_path: Path) -> None:
    (tmp_path / "mics").mkdir()
    for i in range(4):
        with mrcfile.new(tmp_path / "mics" / f"m{i}.mrc") as m:
            m.set_data(np.ones((64, 64), dtype=np.float32) * i)
            m.voxel_size = 0.83
    pictures = dataset_pictures(tmp_path, limit=3)
    assert [(p.name, p.caption) for p in pictures] == [("image-001", "mics/m0.mrc"), ("image-002", "mics/m1.mrc"),
                                                       ("image-003", "mics/m2.mrc")]  # fmt: skip
    assert abs((pictures[0].pixel_size_a or 0) - 0.83) < 1e-6
    (tmp_path / "empty").mkdir()
    assert dataset_pictures(tmp_path / "empty") == []
