"""The job state machine: every job transition goes through ``move``.

Moves are conditional updates (``... WHERE state = <expected>``), so two writers racing on
the same job cannot both win; the loser gets ``Conflict``.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from hub.errors import Conflict
from hub.jobs.models import Attempt, Job
from hub.types import utcnow
from shared.schemas.jobs import FINAL_STATES, JobState

S = JobState

#: from-state -> the states it may move to.
LEGAL: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.INITIALIZING, S.CANCELED, S.SYSTEM_ERROR}),
    S.INITIALIZING: frozenset(
        {S.RUNNING, S.COMPLETE, S.EXECUTOR_ERROR, S.SYSTEM_ERROR, S.CANCELING, S.CANCELED, S.QUEUED, S.PREEMPTED}
    ),
    S.RUNNING: frozenset({S.COMPLETE, S.EXECUTOR_ERROR, S.SYSTEM_ERROR, S.CANCELING, S.CANCELED, S.QUEUED, S.PREEMPTED}),
    S.CANCELING: frozenset({S.CANCELED, S.COMPLETE, S.EXECUTOR_ERROR, S.SYSTEM_ERROR}),
    S.PREEMPTED: frozenset({S.QUEUED, S.CANCELED, S.SYSTEM_ERROR}),
    S.COMPLETE: frozenset(),
    S.EXECUTOR_ERROR: frozenset(),
    S.SYSTEM_ERROR: frozenset(),
    S.CANCELED: frozenset(),
}


def can_move(frm: JobState, to: JobState) -> bool:
    return frm == to or to in LEGAL[frm]


def move(session: Session, job: Job, to: JobState, reason: str | None = None, **fields: object) -> None:
    """Move ``job`` to ``to`` if it is still in the state we read; else Conflict."""
    frm = JobState(job.state)
    if not can_move(frm, to):
        raise Conflict(f"job {job.id} is {frm.value} and cannot become {to.value}")
    now = utcnow()
    values: dict[str, object] = {"state": to.value, "updated_at": now, **fields}
    if reason is not None:
        values["state_reason"] = reason
    if to in FINAL_STATES:
        values["finished_at"] = now
    result = session.execute(update(Job).where(col(Job.id) == job.id, col(Job.state) == frm.value).values(**values))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"job {job.id} changed while this request ran; retry")
    session.refresh(job)


def claim_attempt(session: Session, attempt: Attempt, **fields: object) -> bool:
    """offered -> claimed, only if still offered. True if this caller won."""
    result = session.execute(
        update(Attempt).where(col(Attempt.id) == attempt.id, col(Attempt.state) == "offered").values(state="claimed", **fields)
    )
    won: bool = result.rowcount == 1  # type: ignore[attr-defined]
    if won:
        session.refresh(attempt)
    return won


def end_attempt(session: Session, attempt: Attempt, state: str, expected: tuple[str, ...], **fields: object) -> bool:
    """Close an attempt (ended, lost, expired, refused, withdrawn) if it is in ``expected``."""
    result = session.execute(
        update(Attempt)
        .where(col(Attempt.id) == attempt.id, col(Attempt.state).in_(expected))
        .values(state=state, ended_at=fields.pop("ended_at", utcnow()), **fields)
    )
    done: bool = result.rowcount == 1  # type: ignore[attr-defined]
    if done:
        session.refresh(attempt)
    return done
