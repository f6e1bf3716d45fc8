"""A partner site's side of a RELION job from another site's project: its own checks
before running a visitor's commands, and the runner's staging of content-addressed files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from shared.relion_files import ChecksumMismatch
from shared.schemas.jobs import JobSpec
from site_agent.config import AgentSettings
from site_agent.relion_runner import stage
from site_agent.relion_site import refusal, write_plan


def settings(tmp_path: Path, **relion: Any) -> AgentSettings:
    return AgentSettings(agent={"state_dir": tmp_path / "state"}, relion=relion)


def relion_bin(tmp_path: Path, *names: str) -> Path:
    bindir = tmp_path / "relion-3.1.3" / "bin"
    bindir.mkdir(parents=True)
    for name in names:
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


def job(exchange: Path, program: str = "relion_refine", ranks: int = 1, files: list[dict[str, Any]] | None = None) -> JobSpec:
    return JobSpec.model_validate({
        "name": "relion Class2D/job001", "kind": "relion.class2d",
        "resources": {"cpus": ranks, "mpi_ranks": ranks},
        "relion": {"commands": [{"program": program, "args": ["--i", "particles.star", "--o", "Class2D/job001/run"]}],
                   "output_dir": "Class2D/job001/", "exchange": str(exchange), "files": files or []},
    })  # fmt: skip


def test_the_site_runs_only_its_own_relion_from_exchanges_it_allows(tmp_path: Path) -> None:
    bindir = relion_bin(tmp_path, "relion_refine", "relion_refine_mpi")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    other = tmp_path / "other-exchange"
    other.mkdir()
    s = settings(tmp_path, bin_dir=bindir, exchanges=[exchange], mpirun="mpirun --bind-to none")
    assert refusal(s, job(exchange)) is None
    assert refusal(s, job(other)) == f"this site does not read project files from the exchange {other} ([relion] exchanges)"
    assert refusal(s, job(exchange, "relion_postprocess")) == f"this site has no relion_postprocess (looked in {bindir})"

    write_plan(s, tmp_path / "work", job(exchange, "relion_refine_mpi", ranks=3))
    plan = json.loads((tmp_path / "work" / "relion.json").read_text())
    assert plan["commands"] == [["mpirun", "--bind-to", "none", "-n", "3", str(bindir / "relion_refine_mpi"),
                                 "--i", "particles.star", "--o", "Class2D/job001/run"]]  # fmt: skip
    assert plan["output_dir"] == "Class2D/job001" and plan["cache_dir"] == str(tmp_path / "state" / "relion-cache")


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
