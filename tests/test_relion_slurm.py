"""RELION queue jobs through a site's Slurm executor: RELION's "Submit to queue" at the home
site, a partner whose agent runs its jobs on a real single-node Slurm cluster.

The job is one Slurm batch job with the job's MPI ranks as tasks and its threads as CPUs
per task; the runner inside it runs once (not under ``srun``) and starts
``relion_refine_mpi`` with the site's MPI launcher, which takes its ranks from that
allocation. Real hub, agents, Slurm, OpenMPI and RELION.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.services import SlurmCluster, missing
from tests.test_relion_queue_e2e import add_class2d, job_of, make_project, pipeliner, queue_extras, relion_network

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_a_relion_queue_job_runs_through_slurm_with_its_mpi_ranks(tmp_path: Path, slurm: SlurmCluster) -> None:
    if shutil.which("relion_refine_mpi") is None or shutil.which("mpirun") is None:
        missing("RELION's MPI build (relion_refine_mpi) and mpirun")
    slurm.cancel_all()
    # OpenMPI will not start as root unless told; the test cluster runs jobs as root.
    mpirun = "mpirun --allow-run-as-root" if os.geteuid() == 0 else "mpirun"
    hpc = (f'mpirun = "{mpirun}"\n[executor]\ntype = "slurm"\nslurm_conf = "{slurm.conf}"\npartition = "cpu"\n'
           "poll_interval_s = 0.5\n")  # fmt: skip
    found = {"hpc": f'backend = "slurm"\nslurm_conf = "{slurm.conf}"'}
    with relion_network(tmp_path, {"hpc": hpc}, discovery=found) as network:
        hub, me, agent = network["hub"], network["me"], network["agents"][1]
        env = {**network["env"], **queue_extras()}
        project = make_project(tmp_path / "project")
        # Two MPI ranks (RELION writes relion_refine_mpi), one thread each: the test node has 2 CPUs and 2 GB.
        add_class2d(project, env, queue="hpc", nr_mpi=2, nr_threads=1, nr_iter=2, qsub_extra4="0.5")
        out = pipeliner(project, env, "--RunJobs", "Class2D/job001/")
        assert out.returncode == 0, out.stdout + out.stderr
        job1 = project / "Class2D" / "job001"
        assert (job1 / "RELION_JOB_EXIT_SUCCESS").exists(), (job1 / "run.err").read_text()
        for name in ("run_it002_classes.mrcs", "run_it002_data.star", "run_it002_model.star"):
            assert (job1 / name).is_file(), f"{name} came home"
        job_id = job_of(project, "Class2D/job001")
        job = hub.call("GET", f"/api/v1/jobs/{job_id}", me)
        assert job["state"] == "COMPLETE" and job["site"] == "hpc"
        r = job["spec"]["resources"]
        assert (r["mpi_ranks"], r["threads_per_rank"], r["memory_gb"]) == (2, 1, 0.5), "as the script said"

        batch = (agent.dir / "state" / "work" / f"{job_id}-1" / "job.sbatch").read_text()
        assert "#SBATCH --ntasks=2" in batch and "#SBATCH --cpus-per-task=1" in batch and "#SBATCH --partition=cpu" in batch
        [runner] = [line for line in batch.splitlines() if "site_agent.relion_runner" in line]
        assert not runner.startswith("srun"), "the runner runs once; it starts the MPI ranks itself"
        logs = hub.call("GET", f"/api/v1/jobs/{job_id}/logs", me)["stdout_tail"]
        assert f"cryomesh: running {mpirun} -n 2 {shutil.which('relion_refine_mpi')} --o Class2D/job001/run" in logs, logs
        assert "Number of MPI processes = 2" in " ".join((job1 / "run.out").read_text().split()), "two ranks ran"
