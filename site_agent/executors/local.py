"""Jobs as local subprocesses: one work dir each, their own process group (so cancel
reaches every child), pinned to as many CPUs as asked and capped in memory."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
from pathlib import Path

import psutil

from shared.schemas.jobs import JobSpec, JobState
from site_agent.commands import argv_for
from site_agent.config import ExecutorSection
from site_agent.executors.base import WRAPPER, Status, exit_code, finished, job_env
from site_agent.jobstore import JobHandle


class LocalExecutor:
    name = "local"

    def __init__(self, cfg: ExecutorSection) -> None:
        self.cfg = cfg
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def submit(self, h: JobHandle, spec: JobSpec) -> str:
        workdir = Path(h.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "wrapper.sh").write_text(WRAPPER)
        cpus = sorted(os.sched_getaffinity(0))[: max(1, spec.resources.cpus)]
        memory = int(spec.resources.memory_gb * 2**30)

        def limits() -> None:  # runs in the child, before exec
            os.sched_setaffinity(0, cpus)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        env = {**os.environ, **job_env(h, spec), "OMP_NUM_THREADS": str(len(cpus))}
        Path(env["CRYOMESH_OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
        with (workdir / "stdout.txt").open("ab") as out, (workdir / "stderr.txt").open("ab") as err:
            proc = subprocess.Popen(
                ["/bin/sh", str(workdir / "wrapper.sh"), *argv_for(spec)], cwd=workdir, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=limits, env=env,
            )  # fmt: skip
        self._procs[h.attempt_id] = proc
        h.extra["create_time"] = psutil.Process(proc.pid).create_time()
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
        self._procs.pop(h.attempt_id, None)
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
        return self._alive(h) or exit_code(Path(h.workdir)) is not None
