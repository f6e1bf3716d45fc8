"""A partner site's side of a RELION job from another site's project: its own checks
before running a visitor's commands (its measured RELION, its policy on generic commands),
and the runner's staging of content-addressed files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.relion_files import ChecksumMismatch
from shared.schemas.jobs import JobSpec
from shared.schemas.software import MeasuredSoftware
from site_agent.config import AgentSettings
from site_agent.relion_runner import stage
from site_agent.relion_site import refusal, write_plan
from site_agent.software import choose_build


def settings(tmp_path: Path, policy: dict[str, Any] | None = None, **relion: Any) -> AgentSettings:
    return AgentSettings(agent={"state_dir": tmp_path / "state"}, relion=relion, policy=policy or {})


def relion_bin(tmp_path: Path, *names: str, version: str = "3.1.3") -> Path:
    bindir = tmp_path / f"relion-{version}" / "bin"
    bindir.mkdir(parents=True)
    for name in names:
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


def measured(bindir: Path, version: str = "3.1.3", build: str = "cpu") -> MeasuredSoftware:
    """A build as site_agent.software measures it (probing real builds: tests/site_agent/test_software.py)."""
    return MeasuredSoftware(name="relion", version=version, build=build, mpi=True, path=str(bindir))


def job(
    exchange: Path,
    program: str = "relion_refine",
    ranks: int = 1,
    files: list[dict[str, Any]] | None = None,
    more: list[dict[str, Any]] | None = None,
    gpus: int = 0,
) -> JobSpec:
    return JobSpec.model_validate({
        "name": "relion Class2D/job001", "kind": "relion.class2d",
        "resources": {"cpus": ranks, "mpi_ranks": ranks, "gpus": gpus},
        "relion": {"commands": [{"program": program, "args": ["--i", "particles.star", "--o", "Class2D/job001/run"]},
                                *(more or [])],
                   "output_dir": "Class2D/job001/", "exchange": str(exchange), "files": files or []},
    })  # fmt: skip


def test_the_site_runs_its_measured_relion_from_exchanges_it_allows(tmp_path: Path) -> None:
    bindir = relion_bin(tmp_path, "relion_refine", "relion_refine_mpi")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    other = tmp_path / "other-exchange"
    other.mkdir()
    s = settings(tmp_path, exchanges=[exchange], mpirun="mpirun --bind-to none")
    build = measured(bindir)
    assert refusal(s, job(exchange), build, [build]) is None
    assert refusal(s, job(other), build, [build]) == (
        f"this site does not read project files from the exchange {other} ([relion] exchanges)"
    )
    assert refusal(s, job(exchange, "relion_postprocess"), build, [build]) == (
        f"this site has no relion_postprocess (looked in {bindir})"
    )
    assert refusal(s, job(exchange, gpus=1), None, [build]) == (
        f"none of this site's RELION builds fits the job (measured: 3.1.3 cpu at {bindir})"
    ), "a GPU job and only a CPU build: refused, not run on the wrong build"

    write_plan(s, tmp_path / "work", job(exchange, "relion_refine_mpi", ranks=3), build)
    plan = json.loads((tmp_path / "work" / "relion.json").read_text())
    assert plan["commands"] == [["mpirun", "--bind-to", "none", "-n", "3", str(bindir / "relion_refine_mpi"),
                                 "--i", "particles.star", "--o", "Class2D/job001/run"]]  # fmt: skip
    assert plan["output_dir"] == "Class2D/job001" and plan["cache_dir"] == str(tmp_path / "state" / "relion-cache")


def test_the_queue_runner_takes_relion_from_the_build_discovery_chose(tmp_path: Path) -> None:
    """One setting for RELION: the build [software] measured and choose_build picked, not a
    second bin_dir of the runner's own."""
    old = relion_bin(tmp_path, "relion_refine", version="3.1.3")
    new = relion_bin(tmp_path, "relion_refine", version="4.0.1")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    s = settings(tmp_path, exchanges=[exchange])
    found = [measured(old, "3.1.3"), measured(new, "4.0.1")]
    spec = job(exchange)
    build = choose_build(found, spec)
    assert build is not None and build.path == str(new), "newest fitting build"
    write_plan(s, tmp_path / "work", spec, build)
    assert json.loads((tmp_path / "work" / "relion.json").read_text())["commands"][0][0] == str(new / "relion_refine")


def test_the_deprecated_bin_dir_is_read_as_a_software_dir_and_said_so(tmp_path: Path) -> None:
    bindir = relion_bin(tmp_path, "relion_refine")
    s = settings(tmp_path, bin_dir=bindir, exchanges=[tmp_path])
    assert s.software.relion_dirs == [bindir], "measured like any listed install"
    [note] = s.deprecations()
    assert "[relion] bin_dir is deprecated" in note and f'relion_dirs = ["{bindir}"]' in note and "[software]" in note
    assert settings(tmp_path).deprecations() == []
    # With probing off nothing is measured: the programs come from relion_dirs, then PATH.
    unprobed = AgentSettings(agent={"state_dir": tmp_path / "state"}, relion={"bin_dir": bindir, "exchanges": [tmp_path]},
                             software={"probe": False})  # fmt: skip
    write_plan(unprobed, tmp_path / "work", job(tmp_path), None)
    assert json.loads((tmp_path / "work" / "relion.json").read_text())["commands"][0][0] == str(bindir / "relion_refine")


def test_generic_commands_run_only_as_the_site_policy_says(tmp_path: Path) -> None:
    bindir = relion_bin(tmp_path, "relion_refine")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    build = measured(bindir)
    generic = job(exchange, more=[{"program": "sha256sum", "args": ["particles.star"]}])
    assert refusal(settings(tmp_path, exchanges=[exchange]), generic, build, [build]) == (
        "sha256sum is not a RELION program, and this site's policy runs only RELION programs "
        '([policy] generic_commands = "none")'
    ), "off by default"
    listed = settings(tmp_path, {"generic_commands": "listed", "generic_programs": ["ctffind4"]}, exchanges=[exchange])
    assert refusal(listed, generic, build, [build]) == (
        "sha256sum is not a RELION program, and this site's policy runs only RELION programs and ctffind4 "
        "([policy] generic_programs)"
    )
    allowed = settings(tmp_path, {"generic_commands": "listed", "generic_programs": ["sha256sum"]}, exchanges=[exchange])
    assert refusal(allowed, generic, build, [build]) is None
    write_plan(allowed, tmp_path / "work", generic, build)
    commands = json.loads((tmp_path / "work" / "relion.json").read_text())["commands"]
    assert commands[1] == [shutil.which("sha256sum"), "particles.star"], "from this site's PATH, as argv"
    anything = settings(tmp_path, {"generic_commands": "any"}, exchanges=[exchange])
    assert refusal(anything, job(exchange, more=[{"program": "no-such-program-here", "args": []}]), build, [build]) == (
        "this site has no no-such-program-here (looked in PATH)"
    )


def test_staging_fetches_each_checksum_once_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    exchange = tmp_path / "exchange"
    cas = exchange / "relion" / "cas"
    cas.mkdir(parents=True)
    stack, star = b"images" * 1000, b"data_particles\n"
    files = []
    for rel, data in (("Particles/a.mrcs", stack), ("particles.star", star)):
        digest = hashlib.sha256(data).hexdigest()
        (cas / digest).write_bytes(data)
        files.append({"path": rel, "size": len(data), "sha256": digest})
    plan = {"exchange": str(exchange), "cache_dir": str(tmp_path / "cache"), "files": files}
    assert stage(plan, tmp_path / "p1") == (len(stack) + len(star), 0)
    assert (tmp_path / "p1" / "Particles" / "a.mrcs").read_bytes() == stack, "laid out as in the project"
    assert stage(plan, tmp_path / "p2") == (0, len(stack) + len(star)), "the second job finds both files here"

    bad = hashlib.sha256(b"other").hexdigest()
    (cas / bad).write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match="expected 5 bytes"):
        stage({**plan, "files": [{"path": "x.mrcs", "size": 5, "sha256": bad}]}, tmp_path / "p3")
    assert not (tmp_path / "cache" / bad).exists(), "a file that does not check out never enters the cache"
    with pytest.raises(ValueError, match="leads outside"):
        (tmp_path / "p4").mkdir()
        (tmp_path / "p4" / "Particles").symlink_to(tmp_path)
        stage(plan, tmp_path / "p4")
