"""Jobs as local subprocesses: one work dir each, their own process group (so cancel
reaches every child), pinned to as many CPUs as asked and capped in memory.

The executor keeps account of what its running jobs hold (``allocated``): each job is
pinned to the CPUs least used by the other jobs, so two one-CPU jobs run on two CPUs,
and ``local`` discovery reports those CPUs, the jobs' memory and their GPUs as allocated.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import ValidationError

from shared.schemas.jobs import JobSpec, JobState
from site_agent.commands import argv_for
from site_agent.config import ExecutorSection
from site_agent.executors.base import WRAPPER, Allocation, Status, exit_code, finished, job_env
from site_agent.jobstore import JobHandle


@dataclass
class _Held:
    cpu_ids: list[int]
    spec: JobSpec
    gpu_model: str | None


class LocalExecutor:
    name = "local"

    def __init__(self, cfg: ExecutorSection) -> None:
        self.cfg = cfg
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._held: dict[str, _Held] = {}  # attempt id -> what its running job holds
        self._lock = threading.Lock()  # submit, poll and the heartbeat's snapshot run in threads

    def _pick_cpus(self, wanted: int) -> list[int]:
        """The CPUs least used by this executor's other jobs (lowest numbers first)."""
        usable = sorted(os.sched_getaffinity(0))
        use = Counter(c for held in self._held.values() for c in held.cpu_ids)
        return sorted(sorted(usable, key=lambda c: (use[c], c))[: max(1, wanted)])

    def allocated(self) -> Allocation:
        total = Allocation()
        with self._lock:
            for held in self._held.values():
                total.add(held.spec, held.gpu_model)
        return total

    def submit(self, h: JobHandle, spec: JobSpec) -> str:
        workdir = Path(h.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "wrapper.sh").write_text(WRAPPER)
        with self._lock:  # chosen and held at once, so two submits never pick the same CPUs
            cpus = self._pick_cpus(spec.resources.cpus)
            self._held[h.attempt_id] = _Held(cpus, spec, h.extra.get("gpu_model"))
        memory = int(spec.resources.memory_gb * 2**30)

        def limits() -> None:  # runs in the child, before exec
            os.sched_setaffinity(0, cpus)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        try:
            env = {**os.environ, **job_env(h, spec), "OMP_NUM_THREADS": str(len(cpus))}
            Path(env["CRYOMESH_OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
            with (workdir / "stdout.txt").open("ab") as out, (workdir / "stderr.txt").open("ab") as err:
                proc = subprocess.Popen(
                    ["/bin/sh", str(workdir / "wrapper.sh"), *argv_for(spec)], cwd=workdir, stdout=out, stderr=err,
                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=limits, env=env,
                )  # fmt: skip
        except BaseException:
            with self._lock:
                self._held.pop(h.attempt_id, None)
            raise
        self._procs[h.attempt_id] = proc
        h.extra["create_time"] = psutil.Process(proc.pid).create_time()
        h.extra["cpu_ids"] = cpus
        return str(proc.pid)

    def _alive(self, h: JobHandle) -> bool:
        proc = self._procs.get(h.attempt_id)
        if proc is not None:
            return proc.poll() is None
        try:  # adopted after a restart: not our child, so check it is the same process
            p = psutil.Process(int(h.local_id or 0))
            return abs(p.create_time() - float(h.extra.get("create_time", 0))) < 1 and p.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, ValueError):
            return False

    def poll(self, h: JobHandle) -> Status:
        if self._alive(h):
            return Status(JobState.RUNNING)
        with self._lock:
            self._procs.pop(h.attempt_id, None)
            self._held.pop(h.attempt_id, None)  # its CPUs, memory and GPUs are free again
        code = exit_code(Path(h.workdir))
        if code is not None:
            return finished(code, h.cancel_requested)
        if h.cancel_requested:
            return Status(JobState.CANCELED, None, "canceled")
        return Status(JobState.SYSTEM_ERROR, None, "the job's process disappeared without an exit code")

    def cancel(self, h: JobHandle) -> None:
        try:
            pgid = int(h.local_id or 0)
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, ValueError, PermissionError):
            return

        def escalate() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

        timer = threading.Timer(self.cfg.cancel_grace_s, escalate)
        timer.daemon = True
        timer.start()

    def adopt(self, h: JobHandle) -> bool:
        if self._alive(h):
            try:
                spec = JobSpec.model_validate(h.spec)
            except ValidationError:
                return True  # followed, but what it holds is unknown
            with self._lock:
                self._held[h.attempt_id] = _Held(list(h.extra.get("cpu_ids", [])), spec, h.extra.get("gpu_model"))
            return True
        return exit_code(Path(h.workdir)) is not None
