"""The executor interface, and the exit-code file every executor's wrapper leaves behind.

A job runs inside a small shell wrapper that writes its exit code to ``exit_code`` in the
work dir. That file is how a result survives the agent being restarted: the agent can
re-adopt a job it did not start in this life and still learn how it ended.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.schemas.jobs import JobSpec, JobState
from site_agent.jobstore import JobHandle

TAIL = 16_384  # bytes of stdout/stderr sent with a report


def job_env(h: JobHandle, spec: JobSpec) -> dict[str, str]:
    """What every job sees: its id and attempt, where its inputs are, where to leave output.

    ``CRYOMESH_INPUTS`` is a JSON object, dataset id -> local directory; ``CRYOMESH_INPUT_DIR``
    is the first input's directory (most jobs have one). A job run with one of the site's
    measured software builds (``h.extra["software_path"]``, see ``site_agent.software``)
    finds that build's programs first on its PATH."""
    inputs: dict[str, str] = h.extra.get("inputs", {})
    env = {
        "CRYOMESH_JOB_ID": h.job_id,
        "CRYOMESH_ATTEMPT": str(h.attempt),
        "CRYOMESH_INPUTS": json.dumps(inputs, sort_keys=True),
        "CRYOMESH_OUTPUT_DIR": str(Path(h.workdir) / (spec.outputs.path if spec.outputs else "output")),
    }
    first = next((inputs[d.dataset] for d in spec.inputs if d.dataset in inputs), None)
    if first:
        env["CRYOMESH_INPUT_DIR"] = first
    if build := h.extra.get("software_path"):
        env["PATH"] = os.pathsep.join([build, os.environ.get("PATH", "")])
    return env


@dataclass
class Status:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None


@dataclass
class Allocation:
    """What the jobs an executor runs hold: CPUs, memory and GPUs (by model; ``None``
    when the job named no model). This, not the machine's load, is what ``local``
    discovery reports as allocated."""

    cpus: int = 0
    memory_mb: int = 0
    gpus: dict[str | None, int] = field(default_factory=dict)
    jobs: int = 0

    def add(self, spec: JobSpec, gpu_model: str | None = None) -> None:
        r = spec.resources
        self.cpus += r.cpus
        self.memory_mb += int(r.memory_gb * 1024)
        if r.gpus:
            model = gpu_model or r.gpu_model
            self.gpus[model] = self.gpus.get(model, 0) + r.gpus
        self.jobs += 1


class Executor(Protocol):
    name: str

    def submit(self, h: JobHandle, spec: JobSpec) -> str:
        """Start the job; return its local id (a pid or a Slurm job id)."""
        ...

    def poll(self, h: JobHandle) -> Status: ...

    def cancel(self, h: JobHandle) -> None: ...

    def adopt(self, h: JobHandle) -> bool:
        """After an agent restart: True if the job can still be followed."""
        ...

    def allocated(self) -> Allocation:
        """What the jobs this executor started (or adopted) and that have not ended hold now."""
        ...


WRAPPER = """#!/bin/sh
# cryomesh job wrapper: run the job, keep its exit code for whoever asks later.
"$@"
code=$?
echo "$code" > exit_code.tmp && mv exit_code.tmp exit_code
exit "$code"
"""


def exit_code(workdir: Path) -> int | None:
    try:
        return int((workdir / "exit_code").read_text().strip())
    except (OSError, ValueError):
        return None


def finished(code: int, canceled: bool) -> Status:
    if canceled:
        return Status(JobState.CANCELED, code, "canceled")
    if code == 0:
        return Status(JobState.COMPLETE, 0)
    return Status(JobState.EXECUTOR_ERROR, code, f"exit code {code}")


def tail(path: Path, limit: int = TAIL) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
