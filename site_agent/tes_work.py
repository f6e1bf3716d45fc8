"""The agent's side of GA4GH TES tasks: refuse what this site does not allow, prepare the
task file the runner reads (``site_agent.tes_run``), and read back what it left.

A site refuses (before claiming) a task whose image its admin neither allows in the site's
container runtime (``[tes] container_images``) nor maps to the host (``host_images``),
whose ``file://`` inputs or outputs lie outside the directories it exports, or whose
``s3://`` ones name a bucket it does not list (``[tes] s3_buckets``): the broker then avoids
the site for that task. The runner reaches S3 with the site's ``[transfers]`` S3 settings
(endpoint, region, profile, part size) and the agent's own AWS credentials, which it
inherits from the agent's environment; no secret is written into the task file.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.schemas.jobs import JobSpec, JobState
from shared.schemas.tes import TesResult, s3_location
from site_agent.config import AgentSettings
from site_agent.executors.base import Status
from site_agent.jobstore import JobHandle
from site_agent.tes_run import RESULT_FILE, SYSTEM_EXIT, TASK_FILE, file_url_path, inside
from site_agent.tes_s3 import S3_SETTINGS


def refusal(settings: AgentSettings, spec: JobSpec) -> str | None:
    if spec.tes is None:
        return None
    cfg = settings.tes
    for e in spec.tes.executors:
        if placement(settings, e.image) is None:
            where = "container_images or host_images" if cfg.container_runtime else "host_images"
            return f"image {e.image} is not allowed at this site (not in its [tes] {where})"
    urls = [i.url for i in spec.tes.inputs if i.url] + [o.url for o in spec.tes.outputs]
    for url in urls:
        if url.startswith("file://") and not inside(file_url_path(url), cfg.exported_dirs):
            return f"{file_url_path(url)} is not inside a directory this site exports (its [tes] exported_dirs)"
        if url.startswith("s3://"):
            try:
                bucket, _ = s3_location(url)
            except ValueError as exc:
                return str(exc)
            if bucket not in cfg.s3_buckets:
                return f"{url}: bucket {bucket!r} is not one this site reaches (its [tes] s3_buckets)"
    return None


def placement(settings: AgentSettings, image: str) -> str | None:
    """Where the executors of ``image`` run: 'container' (its allow-list, checked first),
    'host' (its host_images), or None: not at this site."""
    cfg = settings.tes
    if cfg.container_runtime and any(fnmatch.fnmatchcase(image, p) for p in cfg.container_images):
        return "container"
    if any(fnmatch.fnmatchcase(image, p) for p in cfg.host_images):
        return "host"
    return None


def container(settings: AgentSettings, image: str) -> dict[str, Any] | None:
    """How the runner runs ``image`` in a container (the runtime, the site's file of the
    image); None: on the host."""
    rt = settings.tes.container_runtime
    if rt is None or placement(settings, image) != "container":
        return None
    file = settings.tes.image_files.get(image)
    return {"runtime": asdict(rt), "image_file": str(file) if file else None, "network": settings.tes.container_network}


def image_env(settings: AgentSettings, image: str) -> dict[str, str]:
    """What the site's admin set for the image (``[tes] image_env``): the first matching pattern's."""
    for pattern, env in settings.tes.image_env.items():
        if fnmatch.fnmatchcase(image, pattern):
            return env
    return {}


def prepare(settings: AgentSettings, h: JobHandle, spec: JobSpec) -> None:
    """Write the task file into the job's work dir (before the executor starts the runner)."""
    if spec.tes is None:
        return
    workdir = Path(h.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    task = {
        "work": spec.tes.model_dump(mode="json"),
        "exported_dirs": [str(d) for d in settings.tes.exported_dirs],
        "inputs": h.extra.get("inputs", {}),
        "isolation": settings.tes.isolation,
        "image_env": {e.image: image_env(settings, e.image) for e in spec.tes.executors},
        "containers": {e.image: container(settings, e.image) for e in spec.tes.executors},
        "s3": settings.transfers.model_dump(mode="json", include=S3_SETTINGS),
    }
    (workdir / TASK_FILE).write_text(json.dumps(task))


def finish(h: JobHandle, status: Status) -> tuple[Status, dict[str, Any] | None]:
    """The status to report (a runner's staging failure is a system error) and the executors'
    logs and outputs, for a TES task that ended; (status, None) for anything else."""
    if not h.spec.get("tes") or not (status.state.final or status.state is JobState.SYSTEM_ERROR):
        return status, None
    try:
        result = TesResult.model_validate_json((Path(h.workdir) / RESULT_FILE).read_text())
    except (OSError, ValidationError):
        return status, None
    if status.exit_code == SYSTEM_EXIT and status.state is JobState.EXECUTOR_ERROR:
        reason = "; ".join(result.system_logs) or "the task's inputs or outputs could not be moved"
        status = Status(JobState.SYSTEM_ERROR, status.exit_code, reason[:2000])
    return status, result.model_dump(mode="json")
