"""The agent's TES runner and checks, on real files and real processes: paths are rewritten
under the task's root at path boundaries only, nothing leaves the task or the exported
directories, glob outputs keep their path under path_prefix, and a site refuses images and
directories its admin did not allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.schemas.jobs import JobKind, JobSpec
from shared.schemas.tes import TesWork
from site_agent.config import AgentSettings, TesSection
from site_agent.tes_run import RESULT_FILE, SYSTEM_EXIT, Runner
from site_agent.tes_work import refusal


def run(
    tmp_path: Path, work: dict[str, Any], exported: list[Path] | None = None, inputs: dict[str, str] | None = None
) -> tuple[Runner, int]:
    workdir = tmp_path / "job"
    workdir.mkdir(exist_ok=True)
    runner = Runner(workdir, {"work": work, "exported_dirs": [str(d) for d in exported or []], "inputs": inputs or {}})
    return runner, runner.run()


def test_paths_are_rewritten_at_boundaries_only(tmp_path: Path) -> None:
    r, _ = run(tmp_path, {"executors": [{"image": "x", "command": ["true"]}], "inputs": [{"path": "/data/in", "content": "x"}]})
    root = tmp_path / "job" / "root"
    assert r.rewrite("cat /data/in > /data/input") == f"cat {root}/data/in > /data/input"
    assert r.rewrite("/data/in/x;/data/in") == f"{root}/data/in/x;{root}/data/in"
    assert r.rewrite("/other/data/in") == "/other/data/in"


def test_glob_outputs_directory_inputs_and_env(tmp_path: Path) -> None:
    exported = tmp_path / "exports"
    (exported / "src" / "sub").mkdir(parents=True)
    (exported / "src" / "sub" / "a.txt").write_text("a")
    work = {
        "inputs": [{"path": "/in", "url": f"file://{exported / 'src'}", "type": "DIRECTORY"}],
        "executors": [
            {
                "image": "x",
                "command": ["sh", "-c", "mkdir -p /out/d && cp /in/sub/a.txt /out/d/1.txt && echo $WHERE > /out/d/2.txt"],
                "env": {"WHERE": "/in/sub"},
            },
        ],
        "outputs": [{"path": "/out/d/*.txt", "path_prefix": "/out", "url": f"file://{exported / 'res'}"}],
    }
    r, code = run(tmp_path, work, [exported])
    assert code == 0, r.result
    assert (exported / "res" / "d" / "1.txt").read_text() == "a"
    assert (exported / "res" / "d" / "2.txt").read_text().strip() == str(tmp_path / "job" / "root" / "in" / "sub")
    assert [o.path for o in r.result.outputs] == ["/out/d/1.txt", "/out/d/2.txt"]


def test_nothing_leaves_the_task_or_the_exported_dirs(tmp_path: Path) -> None:
    exported = tmp_path / "exports"
    exported.mkdir()
    (tmp_path / "secret").write_text("no")
    (exported / "link").symlink_to(tmp_path / "secret")
    for work in (
        {"inputs": [{"path": "/x", "url": f"file://{tmp_path / 'secret'}"}]},  # outside the exports
        {"inputs": [{"path": "/x", "url": f"file://{exported / 'link'}"}]},  # a link out of them
        {"outputs": [{"path": "/o", "url": f"file://{tmp_path / 'elsewhere'}"}]},
        {"inputs": [{"path": "/x", "dataset": "ds-1", "dataset_path": "../../secret"}]},
    ):
        r, code = run(tmp_path, {"executors": [{"image": "x", "command": ["sh", "-c", "echo hi > /o"]}], **work}, [exported],
                {"ds-1": str(exported)})  # fmt: skip
        assert code == SYSTEM_EXIT, work
        assert "system error" in r.result.system_logs[0]
        assert (tmp_path / "job" / RESULT_FILE).exists()
    assert not (tmp_path / "elsewhere").exists()


def test_a_site_refuses_images_and_dirs_its_admin_did_not_allow(tmp_path: Path) -> None:
    settings = AgentSettings(tes=TesSection(host_images=["python:3.*"], exported_dirs=[tmp_path]))

    def spec(image: str, url: str = "http://example.org/x") -> JobSpec:
        work = TesWork.model_validate(
            {"executors": [{"image": image, "command": ["true"]}], "inputs": [{"path": "/i", "url": url}]}
        )
        return JobSpec(name="t", kind=JobKind.GENERIC_COMMAND, tes=work)

    assert refusal(settings, spec("python:3.11-slim")) is None
    assert "ubuntu:24.04 is not allowed" in str(refusal(settings, spec("ubuntu:24.04")))
    assert refusal(settings, spec("python:3.11", f"file://{tmp_path}/f")) is None
    assert "not inside a directory this site exports" in str(refusal(settings, spec("python:3.11", "file:///etc/passwd")))


def test_isolated_executors_get_their_own_tmp_and_their_image_env(tmp_path: Path) -> None:
    """What Snakemake's TES plugin needs of a container: a job script at /tmp that runs
    ``mkdir /tmp/conda && cd /tmp``. Two such tasks in turn both succeed (on a shared /tmp
    the second mkdir would fail), each sees /tmp as its working directory, and the task's other
    paths (rewritten in the command, not in files) stay reachable although the job's work dir
    here is itself under /tmp."""
    exported = tmp_path / "exports"
    exported.mkdir()
    image = "snakemake/snakemake:v9"
    script = 'mkdir /tmp/conda && cd /tmp && pwd > /tmp/where && cat "$1" > /tmp/copy && echo $GREETING >> /tmp/copy\n'
    for n in (1, 2):
        work = {
            "inputs": [{"path": "/tmp/run.sh", "content": script}, {"path": "/data/in", "content": f"task {n}\n"}],
            "executors": [{"image": image, "command": ["/bin/sh", "/tmp/run.sh", "/data/in"], "workdir": "/tmp"}],
            "outputs": [
                {"path": "/tmp/where", "url": f"file://{exported}/{n}/where"},
                {"path": "/tmp/copy", "url": f"file://{exported}/{n}/copy"},
            ],
        }
        workdir = tmp_path / f"job{n}"
        workdir.mkdir()
        task = {
            "work": work,
            "exported_dirs": [str(exported)],
            "isolation": "unshare",
            "image_env": {image: {"GREETING": "from the image"}},
        }
        runner = Runner(workdir, task)
        assert runner.run() == 0, runner.result
        assert (exported / str(n) / "where").read_text() == "/tmp\n"
        assert (exported / str(n) / "copy").read_text() == f"task {n}\nfrom the image\n"
        assert (workdir / "root" / "tmp" / "conda").is_dir()
    # Without isolation the same paths are rewritten under the task's root instead.
    assert Runner(tmp_path / "job1", {"work": work}).rewrite("/tmp/run.sh") == f"{tmp_path}/job1/root/tmp/run.sh"
    assert Runner(tmp_path / "job1", {"work": work, "isolation": "unshare"}).rewrite("/tmp/run.sh") == "/tmp/run.sh"


def test_isolation_needs_unshare_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert TesSection(isolation="unshare").isolation == "unshare"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValidationError, match="needs util-linux's unshare on PATH"):
        TesSection(isolation="unshare")
    with pytest.raises(ValidationError, match="isolation"):
        TesSection(isolation="docker")  # type: ignore[arg-type]
