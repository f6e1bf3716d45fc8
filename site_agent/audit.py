"""Integrity audits of the replicas at this site.

Every ``interval_s`` the agent asks the hub for the replicas here (least recently audited
first) and checks each against its manifest: every file must be present with the right
size, no file may be there that the manifest does not list, and a random sample of files
(``sample_fraction``, at least ``min_sample``) has its checksum recomputed. The hub marks
a replica BAD when anything is off, and AVAILABLE again after a clean audit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from pathlib import Path

from shared.schemas.datasets import AuditReport, ReplicaWork
from site_agent.backoff import pause
from site_agent.client import HubClient
from site_agent.config import AuditSection
from site_agent.datasets import file_checksum
from site_agent.errors import HubRefused, HubUnavailable
from site_agent.transfers.exchange import TransferError, safe_join

log = logging.getLogger("cryomesh.agent.audit")


def on_storage(root: Path) -> set[str]:
    """Regular files under ``root``, as manifest paths (links are not followed, as in a scan)."""
    out = set()
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                out.add(full.relative_to(root).as_posix())
    return out


def audit(rep: ReplicaWork, sample_fraction: float, min_sample: int, rng: random.Random | None = None) -> AuditReport:
    root = Path(rep.location)
    files = {f.path: f for f in rep.manifest.files}
    if not root.is_dir():
        return AuditReport(files_checked=len(files), checksums_verified=0, missing=sorted(files)[:10_000])
    present = on_storage(root)
    missing = sorted(set(files) - present)
    unexpected = sorted(present - set(files))
    wrong_size = []
    for path in sorted(set(files) & present):
        try:
            if safe_join(root, path).stat().st_size != files[path].size:
                wrong_size.append(path)
        except (OSError, TransferError):
            missing.append(path)
    candidates = sorted(set(files) & present - set(wrong_size) - set(missing))
    k = min(len(candidates), max(min_sample, math.ceil(sample_fraction * len(candidates))))
    sample = (rng or random.SystemRandom()).sample(candidates, k)
    corrupt = sorted(p for p in sample if file_checksum(root / p, rep.manifest.algorithm) != files[p].checksum)
    return AuditReport(
        files_checked=len(files),
        checksums_verified=len(sample),
        missing=missing[:10_000],
        unexpected=unexpected[:10_000],
        wrong_size=wrong_size[:10_000],
        corrupt=corrupt,
    )


async def audit_loop(cfg: AuditSection, client: HubClient, site: str, stopping: asyncio.Event) -> None:
    await pause(stopping, cfg.first_after_s)
    while not stopping.is_set():
        try:
            reps = [ReplicaWork.model_validate(r) for r in await client.request("GET", f"/api/v1/sites/{site}/replicas")]
            for rep in reps:
                if stopping.is_set():
                    return
                if rep.location.startswith("s3://"):
                    continue  # a replica in S3: the bucket's own durability stands for it; not audited here
                report = await asyncio.to_thread(audit, rep, cfg.sample_fraction, cfg.min_sample)
                await client.request(
                    "POST", f"/api/v1/sites/{site}/replicas/{rep.dataset}/audit", json=report.model_dump(mode="json")
                )
                (log.info if report.clean else log.warning)("audit of %s: %s", rep.dataset, report.summary())
        except (HubUnavailable, HubRefused) as exc:
            log.warning("audit round stopped: %s", exc)
        await pause(stopping, cfg.interval_s)
