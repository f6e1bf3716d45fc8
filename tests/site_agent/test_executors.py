"""Executors on their own: the local executor's CPU and memory limits and process-group
cancel, exit codes, the argv of cryo-EM kinds, and the sbatch script the Slurm executor writes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shared.schemas.jobs import JobSpec, JobState
from site_agent.commands import argv_for
from site_agent.config import ExecutorSection
from site_agent.executors.base import Status
from site_agent.executors.local import LocalExecutor
from site_agent.executors.slurm import batch_script
from site_agent.jobstore import JobHandle


def run_local(tmp: Path, command: list[str], timeout: float = 30, **resources: object) -> tuple[Status, str, str]:
    ex = LocalExecutor(ExecutorSection(cancel_grace_s=1))
    spec = JobSpec.model_validate(
        {"name": "t", "kind": "generic.command", "command": command, "resources": {"cpus": 1, **resources}}
    )
    h = JobHandle(attempt_id="a1", job_id="j1", attempt=1, executor="local", workdir=str(tmp / "w"), spec={}, institution="i")
    h.local_id = ex.submit(h, spec)
    deadline = time.monotonic() + timeout
    status = ex.poll(h)
    while status.state is JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
        status = ex.poll(h)
    return status, (tmp / "w" / "stdout.txt").read_text(), (tmp / "w" / "stderr.txt").read_text()


def test_exit_codes_map_to_tes(tmp_path: Path) -> None:
    ok, out, _ = run_local(tmp_path / "a", ["sh", "-c", "echo fine"])
    assert ok.state is JobState.COMPLETE and ok.exit_code == 0 and out == "fine\n"
    bad, _, err = run_local(tmp_path / "b", ["sh", "-c", "echo oops >&2; exit 5"])
    assert bad.state is JobState.EXECUTOR_ERROR and bad.exit_code == 5 and err == "oops\n"
    missing, _, _ = run_local(tmp_path / "c", ["no-such-program-here"])
    assert missing.state is JobState.EXECUTOR_ERROR and missing.exit_code == 127


def test_cpu_and_memory_limits(tmp_path: Path) -> None:
    status, out, _ = run_local(
        tmp_path / "a", [sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])"]
    )
    assert status.state is JobState.COMPLETE and out.split() == ["1", "1"], "pinned to the one CPU it asked for"
    hog = [sys.executable, "-c", "b = bytearray(1024 * 1024 * 1024); print('allocated')"]
    status, out, err = run_local(tmp_path / "b", hog, memory_gb=0.5)
    assert status.state is JobState.EXECUTOR_ERROR and "MemoryError" in err and "allocated" not in out
    status, out, _ = run_local(tmp_path / "c", hog, memory_gb=2)
    assert status.state is JobState.COMPLETE and "allocated" in out


def test_cancel_stops_the_whole_process_group(tmp_path: Path) -> None:
    ex = LocalExecutor(ExecutorSection(cancel_grace_s=1))
    marker = tmp_path / "child-survived"
    spec = JobSpec.model_validate(
        {"name": "t", "kind": "generic.command", "command": ["sh", "-c", f"(sleep 3; touch {marker}) & sleep 60"]}
    )
    h = JobHandle(
        attempt_id="a1", job_id="j1", attempt=1, executor="local", workdir=str(tmp_path / "w"), spec={}, institution="i"
    )
    h.local_id = ex.submit(h, spec)
    time.sleep(0.3)
    h.cancel_requested = True
    ex.cancel(h)
    deadline = time.monotonic() + 10
    while ex.poll(h).state is JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ex.poll(h).state is JobState.CANCELED
    time.sleep(3.5)
    assert not marker.exists(), "the job's background child was stopped too"


def test_kind_parameters_become_argv() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "r",
            "kind": "relion.refine3d",
            "parameters": {"i": "particles.star", "o": "Refine3D/", "gpu": True, "pad": 2, "skip": False},
            "resources": {"cpus": 16, "mpi_ranks": 4, "threads_per_rank": 4},
        }
    )
    assert argv_for(spec) == ["relion_refine_mpi", "--i", "particles.star", "--o", "Refine3D/", "--gpu", "--pad", "2"]
    mc = JobSpec.model_validate({"name": "m", "kind": "motioncor2", "parameters": {"InTiff": "movies/", "Gpu": 0}})
    assert argv_for(mc) == ["MotionCor2", "-InTiff", "movies/", "-Gpu", "0"]


def test_sbatch_script_carries_the_resources() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "r",
            "kind": "generic.command",
            "command": ["relion_refine", "--o", "out dir/"],
            "resources": {
                "cpus": 8,
                "gpus": 2,
                "gpu_model": "a100",
                "memory_gb": 32,
                "walltime_s": 5400,
                "mpi_ranks": 2,
                "threads_per_rank": 4,
                "scratch_gb": 10,
            },
        }
    )
    h = JobHandle(
        attempt_id="a1", job_id="0123456789abcdef", attempt=2, executor="slurm", workdir="/w/j-2", spec={}, institution="i"
    )
    script = batch_script(h, spec, ExecutorSection(type="slurm", partition="cpu", gpu_partition="gpu"))
    for line in (
        "#SBATCH --ntasks=2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=32768M",
        "#SBATCH --time=90",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --tmp=10240M",
        "#SBATCH --chdir=/w/j-2",
        "srun relion_refine --o 'out dir/'",
    ):
        assert line in script.splitlines(), line
