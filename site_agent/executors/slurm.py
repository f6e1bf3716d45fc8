"""Jobs as Slurm batch jobs: ``sbatch`` with the job's resources, state from ``squeue`` and
``scontrol``, ``scancel`` to stop. A restarted agent re-adopts jobs still known to Slurm.

A job whose node was taken away (a spot node reclaimed, a cloud node powered down or lost)
did nothing wrong: its attempt ends PREEMPTED, and the hub places the job again, wherever it
now finishes first. Jobs are submitted with ``--no-requeue`` so Slurm does not rerun them
behind the hub's back; a job Slurm requeues anyway (an admin's ``scontrol requeue``, or one
submitted without the flag) is cancelled in Slurm and reported PREEMPTED all the same."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from shared.schemas.jobs import JobSpec, JobState
from site_agent.commands import argv_for, shell_line
from site_agent.config import ExecutorSection
from site_agent.executors.base import Allocation, Status, exit_code, finished, job_env
from site_agent.jobstore import JobHandle
from site_agent.slurmcli import parse_fields, run_slurm

#: Slurm job states (squeue %T / scontrol JobState) to TES. NODE_FAIL is PREEMPTED when the
#: node was a cloud node (see ``SlurmExecutor._lost_node``).
SLURM_TO_TES: dict[str, JobState] = {
    "PENDING": JobState.INITIALIZING, "CONFIGURING": JobState.INITIALIZING, "REQUEUED": JobState.INITIALIZING,
    "RESV_DEL_HOLD": JobState.INITIALIZING, "REQUEUE_HOLD": JobState.INITIALIZING, "SUSPENDED": JobState.RUNNING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETE, "FAILED": JobState.EXECUTOR_ERROR, "TIMEOUT": JobState.EXECUTOR_ERROR,
    "OUT_OF_MEMORY": JobState.EXECUTOR_ERROR, "DEADLINE": JobState.EXECUTOR_ERROR, "CANCELLED": JobState.CANCELED,
    "NODE_FAIL": JobState.SYSTEM_ERROR, "BOOT_FAIL": JobState.SYSTEM_ERROR, "PREEMPTED": JobState.PREEMPTED,
}  # fmt: skip
#: States of a job Slurm has put back in its queue after it started.
REQUEUED = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})


def batch_script(h: JobHandle, spec: JobSpec, cfg: ExecutorSection) -> str:
    r = spec.resources
    lines = [
        "#!/bin/sh",
        f"#SBATCH --job-name=cryomesh-{h.job_id[:8]}-{h.attempt}",
        f"#SBATCH --chdir={h.workdir}",
        f"#SBATCH --output={h.workdir}/stdout.txt",
        f"#SBATCH --error={h.workdir}/stderr.txt",
        f"#SBATCH --ntasks={r.mpi_ranks}",
        f"#SBATCH --cpus-per-task={r.threads_per_rank if r.mpi_ranks > 1 else r.cpus}",
        f"#SBATCH --mem={max(1, int(r.memory_gb * 1024))}M",
        f"#SBATCH --time={max(1, -(-r.walltime_s // 60))}",
        "#SBATCH --no-requeue",  # the hub requeues, possibly elsewhere (see the module's docstring)
    ]
    # The partition the broker chose (one this agent reported) where the site's own setting allows
    # it (names none, or lists it); else the site's setting.
    configured = cfg.gpu_partition if r.gpus and cfg.gpu_partition else cfg.partition
    chosen = h.extra.get("partition")
    allowed = [p.strip() for p in configured.split(",")] if configured else []
    partition = chosen if chosen and (not allowed or chosen in allowed) else configured
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if r.gpus:
        model = h.extra.get("gpu_model") or r.gpu_model
        lines.append(f"#SBATCH --gres=gpu:{model}:{r.gpus}" if model else f"#SBATCH --gres=gpu:{r.gpus}")
    if r.scratch_gb:
        lines.append(f"#SBATCH --tmp={int(r.scratch_gb * 1024)}M")
    # A RELION queue job's runner runs once and starts its _mpi programs itself, with the
    # site's launcher, inside this allocation (site_agent/relion_site.py).
    launcher = "srun " if r.mpi_ranks > 1 and spec.relion is None else ""
    lines += [
        "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in job_env(h, spec).items()),
        'mkdir -p "$CRYOMESH_OUTPUT_DIR"',
        f"{launcher}{shell_line(argv_for(spec))}",
        "code=$?",
        'echo "$code" > exit_code.tmp && mv exit_code.tmp exit_code',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


class SlurmExecutor:
    name = "slurm"

    def __init__(self, cfg: ExecutorSection) -> None:
        self.cfg = cfg

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_slurm(list(argv), self.cfg.slurm_bin_dir, self.cfg.slurm_conf, check=check)

    def submit(self, h: JobHandle, spec: JobSpec) -> str:
        workdir = Path(h.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "job.sbatch"
        script.write_text(batch_script(h, spec, self.cfg))
        out = self._run("sbatch", "--parsable", str(script)).stdout.strip()
        return out.split(";")[0]

    def _job(self, local_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields, or {} when Slurm no longer knows the job."""
        s = self._run("scontrol", "show", "job", local_id, "-o", check=False)
        if s.returncode != 0 or "JobState=" not in s.stdout:
            return {}
        return parse_fields(s.stdout.splitlines()[0])

    def _state(self, local_id: str) -> tuple[str | None, str | None]:
        """(Slurm state, ExitCode) or (None, None) when Slurm no longer knows the job."""
        q = self._run("squeue", "-h", "-j", local_id, "-o", "%T", check=False)
        if q.returncode == 0 and q.stdout.strip():
            return q.stdout.strip().split()[0], None
        job = self._job(local_id)
        code = re.match(r"(\d+):(\d+)", job.get("ExitCode", ""))
        return job.get("JobState"), (code.group(1) if code else None)

    def _lost_node(self, local_id: str) -> str | None:
        """Why the job's node counts as taken away rather than broken: it was a cloud node (State
        has CLOUD), or Slurm no longer shows it (a powered-down cloud node is hidden without
        PrivateData=cloud). None for a static node that failed: the site's fault, not the job's."""
        nodes = self._job(local_id).get("NodeList", "")
        if not nodes or nodes == "(null)":
            return "its node is gone"
        shown = self._run("scontrol", "show", "node", nodes, "-o", check=False)
        states = re.findall(r"NodeName=(\S+).*?\bState=(\S+)", shown.stdout) if shown.returncode == 0 else []
        cloud = [name for name, state in states if "CLOUD" in state.split("+")]
        if cloud or not states:
            return f"its cloud node {', '.join(cloud) or nodes} was powered down or lost"
        return None

    def _node_started(self, h: JobHandle, base: str) -> None:
        """Find out once whether a node was started for the job, for the ledger (a cloud node's
        start-up is paid for only then): the job waited in CONFIGURING (Slurm starting its
        powered-down nodes), or once it has nodes, one's slurmd started after the job was
        submitted (ParallelCluster starts slurmd as the instance boots). Unknown (not set) while
        it has none, or when its nodes are gone."""
        if "node_started" in h.extra or h.local_id is None:
            return
        if base == "CONFIGURING":
            h.extra["node_started"] = True
            return
        job = self._job(h.local_id)
        nodes, submitted = job.get("NodeList", ""), job.get("SubmitTime", "")
        if not nodes or nodes == "(null)" or not submitted[:1].isdigit():
            return
        shown = self._run("scontrol", "show", "node", nodes, "-o", check=False)
        starts = re.findall(r"\bSlurmdStartTime=(\S+)", shown.stdout) if shown.returncode == 0 else []
        if starts:  # ISO times to the second in the controller's zone, compared as text: a boot takes longer than that
            h.extra["node_started"] = any(t[:1].isdigit() and t > submitted for t in starts)

    def poll(self, h: JobHandle) -> Status:
        assert h.local_id is not None
        state, code = self._state(h.local_id)
        if state is None:  # purged from Slurm's memory: the wrapper's exit code says how it ended
            recorded = exit_code(Path(h.workdir))
            if recorded is not None:
                return finished(recorded, h.cancel_requested)
            if h.cancel_requested:
                return Status(JobState.CANCELED, None, "canceled")
            return Status(JobState.SYSTEM_ERROR, None, f"Slurm no longer knows job {h.local_id} and it left no exit code")
        base = state.split("+")[0]
        self._node_started(h, base)
        tes = SLURM_TO_TES.get(base, JobState.RUNNING)
        requeued = base in REQUEUED or (tes is JobState.INITIALIZING and h.state == JobState.RUNNING.value)
        if requeued and not h.cancel_requested:  # it ran, and Slurm put it back in its queue
            self._run("scancel", h.local_id, check=False)
            return Status(JobState.PREEMPTED, None, f"Slurm requeued job {h.local_id} (its node was lost or preempted)")
        if tes is JobState.PREEMPTED:
            self._run("scancel", h.local_id, check=False)  # PreemptMode=REQUEUE would run it again here
            return Status(JobState.PREEMPTED, None, "preempted by Slurm")
        if tes in (JobState.INITIALIZING, JobState.RUNNING):
            return Status(tes, None, None)
        recorded = exit_code(Path(h.workdir))
        number = recorded if recorded is not None else (int(code) if code is not None else None)
        if tes is JobState.CANCELED or h.cancel_requested:
            return Status(JobState.CANCELED, number, "canceled")
        if base == "NODE_FAIL" and (lost := self._lost_node(h.local_id)):
            return Status(JobState.PREEMPTED, number, f"Slurm state NODE_FAIL: {lost}")
        if tes is JobState.COMPLETE or (tes is JobState.EXECUTOR_ERROR and number is not None):
            return (
                finished(number if number is not None else 0, False)
                if state != "TIMEOUT"
                else Status(JobState.EXECUTOR_ERROR, number, "walltime exceeded")
            )
        return Status(tes, number, f"Slurm state {state}")

    def cancel(self, h: JobHandle) -> None:
        if h.local_id:
            self._run("scancel", h.local_id, check=False)

    def allocated(self) -> Allocation:
        """Nothing of its own to add: Slurm accounts for its jobs, and ``slurm`` discovery
        reads that allocation (``CPUAlloc``, ``AllocMem``, ``GresUsed``) from Slurm itself."""
        return Allocation()

    def adopt(self, h: JobHandle) -> bool:
        if not h.local_id:
            return False
        state, _ = self._state(h.local_id)
        return state is not None or exit_code(Path(h.workdir)) is not None
