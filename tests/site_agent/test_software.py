"""What RELION the agent finds: Debian's real install, and install dirs made here.

The real one is Debian's RELION 3.1.3 (CPU build, with MPI), installed by ``make test``.
This machine has no GPU and no CUDA toolkit, so a GPU build is *faked*: a directory whose
``relion_refine --version`` prints what a CUDA build of RELION prints (``CUDA-ACC`` in its
Precision line) and a ``cuobjdump`` that lists the cubins such a build carries. The probe
runs them as real programs, exactly as it runs a real install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.schemas.jobs import JobSpec
from shared.schemas.software import MeasuredSoftware
from site_agent.config import ConfigError, SoftwareSection, load_settings
from site_agent.software import choose_build, cuda_archs, discover_software, probe_relion
from tests.services import missing

GPU_VERSION = "RELION version: 5.0.0-commit-90d239 \nPrecision: BASE=double, CUDA-ACC=single, ALTCPU=OFF\n"
CUBINS = "ELF file    1: relion_refine.1.sm_86.cubin\nELF file    2: relion_refine.2.sm_80.cubin\n"


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def fake_gpu_build(prefix: Path, version_text: str = GPU_VERSION, cuobjdump: bool = True) -> Path:
    """``prefix/bin`` with relion_refine(_mpi) of a CUDA build (and cuobjdump beside them)."""
    bin_dir = prefix / "bin"
    printed = version_text.replace("\n", "\\n")
    script(bin_dir / "relion_refine", f'[ "$1" = --version ] && printf "{printed}" && exit 0\necho "no GPU here" >&2; exit 1')
    script(bin_dir / "relion_refine_mpi", "exit 1")
    if cuobjdump:
        cubins = CUBINS.replace("\n", "\\n")
        script(bin_dir / "cuobjdump", f'[ "$1" = --list-elf ] && printf "{cubins}"')
    return bin_dir


@pytest.fixture
def debian_relion() -> Path:
    found = shutil.which("relion_refine")
    if found is None:
        missing("relion (Debian's relion package)")
    assert found is not None
    return Path(found).parent


def test_debians_relion_is_measured_as_a_cpu_build_with_mpi(debian_relion: Path) -> None:
    (m,) = discover_software(SoftwareSection())
    assert (m.name, m.version, m.build, m.cuda_archs) == ("relion", "3.1.3", "cpu", [])
    assert m.mpi is (shutil.which("mpirun") is not None) and m.path == str(debian_relion)
    assert m.notes == "RELION 3.1.3"


def test_a_gpu_build_in_an_install_dir_with_its_cuda_architectures(tmp_path: Path, debian_relion: Path) -> None:
    fake_gpu_build(tmp_path / "relion-5.0-cuda")
    found = discover_software(SoftwareSection(relion_dirs=[tmp_path / "relion-5.0-cuda"]))  # the prefix; bin/ is found
    by_path = {m.path: m for m in found}
    assert set(by_path) == {str(tmp_path / "relion-5.0-cuda" / "bin"), str(debian_relion)}, "the dir and PATH, each once"
    gpu = by_path[str(tmp_path / "relion-5.0-cuda" / "bin")]
    assert (gpu.version, gpu.build, gpu.cuda_archs) == ("5.0.0", "cuda", ["8.0", "8.6"])
    assert gpu.notes == "RELION 5.0.0-commit-90d239"
    assert gpu.mpi is (shutil.which("mpirun") is not None or shutil.which("mpiexec") is not None)


def test_a_gpu_build_without_cuobjdump_is_reported_with_unknown_architectures(tmp_path: Path) -> None:
    bin_dir = fake_gpu_build(tmp_path / "relion", cuobjdump=False)
    m = probe_relion(bin_dir, path=str(tmp_path / "empty"))
    assert m is not None and m.build == "cuda" and m.cuda_archs == [] and not m.mpi, "no launcher on that PATH"
    assert m.notes == "RELION 5.0.0-commit-90d239; CUDA build; architectures unknown (no cuobjdump)"


def test_what_is_not_a_relion_is_left_out(tmp_path: Path) -> None:
    bin_dir = script(tmp_path / "bin" / "relion_refine", "echo 'usage: something else'").parent
    assert probe_relion(bin_dir) is None
    assert probe_relion(tmp_path / "nothing-here") is None
    assert discover_software(SoftwareSection(search_path=False, relion_dirs=[tmp_path / "bin"])) == []


def test_cuda_architectures_from_cuobjdump() -> None:
    assert cuda_archs(CUBINS + "ELF file    3: x.sm_90.cubin\nPTX file 1: x.sm_90.ptx\n") == ["8.0", "8.6", "9.0"]
    assert cuda_archs("") == []


def test_a_job_runs_with_the_build_that_fits_it() -> None:
    cpu = MeasuredSoftware(name="relion", version="3.1.3", build="cpu", mpi=True, path="/usr/bin")
    gpu = MeasuredSoftware(name="relion", version="5.0.0", build="cuda", cuda_archs=["8.0", "8.6"], path="/opt/r5/bin")

    def job(**kw: object) -> JobSpec:
        return JobSpec.model_validate({"name": "c2d", "kind": "relion.class2d", **kw})

    assert choose_build([gpu, cpu], job()) == cpu, "a CPU job prefers the CPU build"
    assert choose_build([gpu, cpu], job(software=[{"name": "relion", "version": ">=5"}])) == gpu
    assert choose_build([gpu, cpu], job(resources={"gpus": 1})) == gpu, "a GPU job needs a GPU build"
    assert choose_build([cpu], job(resources={"gpus": 1})) is None
    assert choose_build([gpu], job(resources={"gpus": 1}, software=[{"name": "relion", "cuda_arch": "9.0"}])) is None


def test_a_typo_in_the_software_section_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[software]\nrelion_dir = ["/opt/relion/bin"]\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert "software.relion_dir: unknown field; did you mean 'relion_dirs'?" in str(err.value)


def test_agent_discover_prints_the_measured_software(tmp_path: Path, debian_relion: Path) -> None:
    fake_gpu_build(tmp_path / "relion-5")
    config = tmp_path / "site.toml"
    config.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[software]\nrelion_dirs = ["{tmp_path / "relion-5"}"]\n')
    out = subprocess.run([sys.executable, "-m", "cryomesh_cli.main", "agent", "discover", "--config", str(config)],
                         capture_output=True, text=True, timeout=120, env={**os.environ})  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    software = {m["version"]: m for m in json.loads(out.stdout)["software"]}
    assert software["5.0.0"]["cuda_archs"] == ["8.0", "8.6"] and software["3.1.3"]["build"] == "cpu"
