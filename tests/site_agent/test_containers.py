"""Container runtimes: detection, the command lines that run an executor, the [tes] settings
that name them, what the agent reports, and which task paths are mounted.

podman is real here (``make test`` installs it). Apptainer and Singularity have no Debian
package and no Docker daemon runs here, so those are *faked* where a test needs them found:
a program on a PATH made in the test that answers the version probe as the real one does.
Their command lines are checked as built, not run.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from shared.schemas.jobs import JobKind, JobSpec
from shared.schemas.tes import TesWork
from site_agent.config import AgentSettings, ConfigError, TesSection, load_settings
from site_agent.containers import Mount, Runtime, choose, container_name, detect, is_image_archive, run_argv, stop_argv
from site_agent.software import container_software
from site_agent.tes_run import Runner, StagingError
from site_agent.tes_work import container, refusal
from tests.podman import busybox_rootfs, require_podman
from tests.test_startup_errors import cli, one_error_line

PODMAN = Runtime("podman", "4.3.1", "/usr/bin/podman")
DOCKER = Runtime("docker", "24.0.5", "/usr/bin/docker")
APPTAINER = Runtime("apptainer", "1.3.4", "/usr/bin/apptainer")
MOUNTS = [Mount("/w/root/data", "/data"), Mount("/w/root/in.txt", "/in.txt", read_only=True)]


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)


def test_podman_is_found_with_its_version_and_missing_runtimes_say_why(tmp_path: Path) -> None:
    require_podman()
    printed = subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout
    found = {p.name: p for p in detect()}
    assert found["podman"].runtime is not None and found["podman"].runtime.version == printed.split()[-1]
    # Faked: a Docker client whose daemon does not answer is no runtime; apptainer answers.
    fake(tmp_path / "bin", "docker", 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1')
    fake(tmp_path / "bin", "apptainer", 'echo "apptainer version 1.3.4"')
    found = {p.name: p for p in detect(path=str(tmp_path / "bin"))}
    assert found["apptainer"].runtime == Runtime("apptainer", "1.3.4", str(tmp_path / "bin" / "apptainer"))
    assert found["docker"].runtime is None and "Cannot connect to the Docker daemon" in found["docker"].why
    assert found["singularity"].why == "singularity is not on PATH"
    assert choose("auto", path=str(tmp_path / "bin")).name == "apptainer"  # the first one found
    with pytest.raises(ValueError, match="podman is not on PATH"):
        choose("podman", path=str(tmp_path / "bin"))


def test_the_command_lines_of_each_runtime() -> None:
    """Built, not run, for docker and apptainer (neither runs here); podman's runs end to end
    in tests/test_tes_containers_e2e.py."""
    common = {"name": "cryomesh-a1-0", "image": "busybox:1", "command": ["sh", "-c", "echo $X"], "workdir": "/data",
              "env": {"X": "1"}, "mounts": MOUNTS}  # fmt: skip
    assert run_argv(PODMAN, **common, stdin=True, network=False, image_file="/img/bb.tar") == [
        "/usr/bin/podman", "run", "--rm", "--name", "cryomesh-a1-0", "--entrypoint", "", "--network", "none", "-i",
        "--pull", "never", "--workdir", "/data", "-e", "X=1", "-v", "/w/root/data:/data:rw", "-v", "/w/root/in.txt:/in.txt:ro",
        "busybox:1", "sh", "-c", "echo $X",
    ]  # fmt: skip
    assert run_argv(DOCKER, **{**common, "workdir": None}, stdin=False, network=True, image_file=None) == [
        "/usr/bin/docker", "run", "--rm", "--name", "cryomesh-a1-0", "--entrypoint", "", "-e", "X=1",
        "-v", "/w/root/data:/data:rw", "-v", "/w/root/in.txt:/in.txt:ro", "busybox:1", "sh", "-c", "echo $X",
    ]  # fmt: skip
    assert run_argv(APPTAINER, **common, stdin=True, network=False, image_file="/img/bb.sif") == [
        "/usr/bin/apptainer", "exec", "--containall", "--pwd", "/data", "--net", "--network", "none", "--env", "X=1",
        "--bind", "/w/root/data:/data:rw", "--bind", "/w/root/in.txt:/in.txt:ro", "/img/bb.sif", "sh", "-c", "echo $X",
    ]  # fmt: skip
    assert run_argv(APPTAINER, **common, stdin=False, network=True, image_file=None)[-4] == "docker://busybox:1"
    assert stop_argv(PODMAN, "c") == ["/usr/bin/podman", "rm", "--force", "--time", "0", "c"]
    assert stop_argv(DOCKER, "c") == ["/usr/bin/docker", "rm", "--force", "c"]
    assert stop_argv(APPTAINER, "c") is None  # a child of the job: the job's signal ends it
    assert container_name(Path("/w/att:01"), 2) == "cryomesh-att-01-2"


def test_a_runtime_that_is_not_installed_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[tes]\nruntime = "apptainer"\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value).startswith(f"{config}: tes: "), err.value
    assert str(err.value).endswith("runtime 'apptainer': apptainer cannot be used (apptainer is not on PATH)"), err.value
    fake(tmp_path / "bin", "docker", 'echo "Cannot connect to the Docker daemon. Is the docker daemon running?" >&2; exit 1')
    config.write_text('[tes]\nruntime = "docker"\ncontainer_images = ["busybox:*"]\n')
    with pytest.raises(ConfigError, match=r"docker cannot be used .*Is the docker daemon running\?"):
        load_settings(config)
    config.write_text('[tes]\ncontainer_images = ["busybox:*"]\n')  # auto, and nothing installed
    with pytest.raises(ConfigError, match="runtime 'auto': no container runtime is installed"):
        load_settings(config)
    config.write_text('[tes]\nruntime = "podman"\ncontainer_image = ["busybox:*"]\n')
    with pytest.raises(ConfigError, match=r"tes\.container_image: unknown field; did you mean 'container_images'"):
        load_settings(config)


def test_image_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    for settings, problem in [
        ({"runtime": "none", "container_images": ["a"]}, "container_images need a container runtime (runtime is 'none')"),
        ({"image_files": {"a": str(tmp_path)}}, "image_files needs container_images"),
        ({"container_images": ["busybox:*"], "image_files": {"alpine:3": str(tmp_path)}}, "alpine:3 is not in container_images"),
        ({"container_images": ["busybox:*"], "image_files": {"busybox:1": str(tmp_path / "no")}}, "/no is not a file"),
        ({"container_images": ["x" * 95]}, "at most 94 characters"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            TesSection.model_validate(settings)


def test_the_agent_reports_runtimes_and_the_images_it_runs(tmp_path: Path) -> None:
    require_podman()
    rootfs = busybox_rootfs(tmp_path)
    tes = TesSection(runtime="podman", container_images=["busybox:*"], image_files={"busybox:1": rootfs},
                     host_images=["python:3.11-slim"])  # fmt: skip
    found = {s.name: s for s in container_software(tes)}
    assert found["podman"].version == tes.container_runtime.version  # type: ignore[union-attr]
    assert "runs this site's [tes] container_images" in str(found["podman"].notes)
    assert (found["image:busybox:*"].version, found["image:busybox:*"].path) == ("podman", str(rootfs))
    assert found["image:python:3.11-slim"].version == "host"
    assert not is_image_archive(rootfs)  # a root file system: imported, not loaded


def test_the_task_paths_mounted_into_a_container(tmp_path: Path) -> None:
    work = {
        "inputs": [{"path": "/data/in.txt", "content": "x"}, {"path": "/ref/genome.fa", "content": "x"},
                   {"path": "/db", "type": "DIRECTORY", "url": "file:///x"}],
        "outputs": [{"path": "/data/out/a.txt", "url": "file:///e/a"}, {"path": "/res/*.txt", "url": "file:///e/r"}],
        "executors": [{"image": "i", "command": ["true"], "workdir": "/data"}],
        "volumes": ["/scratch"],
    }  # fmt: skip
    root = tmp_path / "root"
    assert Runner(tmp_path, {"work": work}).mounts() == [
        Mount(f"{root}/data", "/data"), Mount(f"{root}/db", "/db"), Mount(f"{root}/res", "/res"),
        Mount(f"{root}/scratch", "/scratch"), Mount(f"{root}/ref/genome.fa", "/ref/genome.fa", read_only=True),
    ]  # fmt: skip
    at_root = {**work, "outputs": [{"path": "/a.txt", "url": "file:///e/a"}]}
    with pytest.raises(StagingError, match="'/' cannot be mounted"):
        Runner(tmp_path, {"work": TesWork.model_validate(at_root).model_dump()}).mounts()


def test_a_site_runs_allowed_images_in_its_runtime_and_refuses_the_rest(tmp_path: Path) -> None:
    require_podman()
    rootfs = busybox_rootfs(tmp_path)
    settings = AgentSettings(tes=TesSection(runtime="podman", container_images=["busybox:*"],
                                            image_files={"busybox:1": rootfs}, host_images=["python:3.*"]))  # fmt: skip

    def spec(image: str) -> JobSpec:
        work = TesWork.model_validate({"executors": [{"image": image, "command": ["true"]}]})
        return JobSpec(name="t", kind=JobKind.GENERIC_COMMAND, tes=work)

    assert refusal(settings, spec("busybox:1")) is None and refusal(settings, spec("python:3.11")) is None
    assert refusal(settings, spec("ubuntu:24.04")) == (
        "image ubuntu:24.04 is not allowed at this site (not in its [tes] container_images or host_images)"
    )
    how = container(settings, "busybox:1")
    assert how is not None and how["runtime"]["name"] == "podman" and how["image_file"] == str(rootfs)
    assert how["network"] is False
    assert container(settings, "python:3.11") is None  # mapped to the host


def test_agent_run_with_a_runtime_not_installed_stops_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[tes]\nruntime = "singularity"\n')
    empty = tmp_path / "empty"  # a PATH without it, wherever the suite runs
    empty.mkdir()
    message = one_error_line(cli("agent", "run", "--config", str(config), tmp=tmp_path, PATH=str(empty)))
    assert message.startswith(f"{config}: tes: "), message
    assert message.endswith("runtime 'singularity': singularity cannot be used (singularity is not on PATH)"), message
