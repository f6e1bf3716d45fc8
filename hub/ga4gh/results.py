"""The executors' logs and outputs an agent reports for a TES task, kept beside its job.

Apart from ``hub.ga4gh.tes`` so the job report (``hub.jobs.service``) can call it without
importing the TES service, which imports the job service."""

from __future__ import annotations

from sqlmodel import Session

from hub.ga4gh.models import TesTaskRow
from shared.schemas.tes import TesResult


def record_tes_result(session: Session, job_id: str, attempt: int, result: TesResult) -> None:
    row = session.get(TesTaskRow, job_id)
    if row is not None:  # a job not made through TES has nowhere to keep them
        row.result = {"attempt": attempt, **result.model_dump(mode="json")}
        session.add(row)
