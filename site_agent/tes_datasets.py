"""A GA4GH TES task's outputs to ``drs://<hub host>/new/<name>`` become datasets of this site.

The runner (``site_agent.tes_run``) gathers each name's files into ``<work dir>/datasets/<name>``;
once the task is COMPLETE the agent registers each directory through the paged upload every
dataset takes (``site_agent.dataset_upload``), with SHA-256 checksums (the checksum DRS clients
verify, ``sha-256``), the task's input datasets and the task as provenance. The hub gives the
dataset the task's institution and owner (it checks that the task ran here). The task's output
logs then name each file's drs:// URI in place of the URL asked for, and its system logs each
dataset's. A registration that fails makes the task a system error: the outputs it asked for
do not exist. Registered names are kept with the job, so a restart does not register twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.drs_ids import file_object_id
from shared.schemas.datasets import ChecksumAlgorithm
from shared.schemas.jobs import JobSpec
from shared.schemas.tes import NEW_DATASET_PATH
from site_agent.client import HubClient
from site_agent.dataset_upload import register
from site_agent.jobstore import JobHandle, JobStore
from site_agent.tes_run import DATASETS_DIR, dataset_name

log = logging.getLogger("cryomesh.agent.tes")


class OutputNotRegistered(Exception):
    """A new dataset a task asked for could not be registered."""


async def register_outputs(client: HubClient, store: JobStore, h: JobHandle, tes: dict[str, Any]) -> None:
    """Register the task's new datasets and rewrite ``tes`` (its ``TesResult``) to name them."""
    spec = JobSpec.model_validate(h.spec)
    assert spec.tes is not None
    names = list(dict.fromkeys(dataset_name(o.url) for o in spec.tes.outputs if o.url.startswith("drs://")))
    done: dict[str, str] = h.extra.setdefault("tes_datasets", {})
    for name in names:
        if name in done:
            continue
        meta = {
            "title": name,
            "description": f"Output {name} of GA4GH TES task {h.job_id}",
            "experiment_type": "other",
            "visibility": "private",
            "source_datasets": [d.dataset for d in spec.inputs],
            "source_job": h.job_id,
        }
        try:
            ds = await register(client, Path(h.workdir) / DATASETS_DIR / name, meta, ChecksumAlgorithm.SHA256)
        except Exception as exc:
            raise OutputNotRegistered(f"output dataset {name} was not registered: {exc}") from exc
        done[name] = ds["id"]
        store.save(h)
        log.info("output %s of task %s registered as dataset %s", name, h.job_id, ds["id"])
    for out in tes.get("outputs", []):
        parts = urlsplit(out["url"])
        if parts.scheme == "drs":
            name, _, rel = parts.path.removeprefix(NEW_DATASET_PATH).partition("/")
            out["url"] = f"drs://{parts.netloc}/{file_object_id(done[name], rel)}"
    host = next((urlsplit(o.url).netloc for o in spec.tes.outputs if o.url.startswith("drs://")), "")
    tes.setdefault("system_logs", []).extend(
        f"output dataset {name}: drs://{host}/{ds_id}" for name, ds_id in done.items() if name in names
    )
