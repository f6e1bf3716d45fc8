"""A broker pass writes its attempts and decisions in bulk: the same rows, decisions and
explanations as writing one ORM object each (the previous path), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from typing import Any

from sqlmodel import Session, col, select

from bench.broker import NOW, seed
from hub.auth.principal import Principal
from hub.broker.service import place_queued
from hub.broker.writes import uuid4_hex
from hub.db import make_engine, transaction
from hub.jobs import service as jobs
from hub.jobs.models import Attempt, Job, PlacementRecord
from shared.schemas.auth import Role
from shared.schemas.jobs import JobSpec

ADMIN = Principal(subject="test", role=Role.NETWORK_ADMIN, issuer="test")


def _spec(resources: dict[str, Any], **extra: Any) -> JobSpec:
    return JobSpec.model_validate({"name": "x", "kind": "relion.refine3d", "command": ["x"], "resources": resources, **extra})


#: Jobs no site can ever run, and jobs only a few sites could run (so most of them wait).
EXTRA = [(_spec({"cpus": 1, "gpus": 1, "gpu_model": "b200"}), "inst-1")] * 5 + [
    (_spec({"cpus": 2, "gpus": 4, "gpu_model": "a100"}), f"inst-{i % 3}") for i in range(300)
]


def _outcome(session: Session) -> dict[str, Any]:
    """Everything a pass writes, without the attempts' random ids."""
    job_rows = session.exec(select(Job).order_by(col(Job.id))).all()
    attempts = session.exec(select(Attempt).order_by(col(Attempt.job_id), col(Attempt.number))).all()
    decisions = session.exec(select(PlacementRecord).order_by(col(PlacementRecord.job_id), col(PlacementRecord.id))).all()
    return {
        "jobs": [(j.id, j.state, j.site_id, j.attempt, j.updated_at, j.state_reason) for j in job_rows],
        "attempts": [(a.job_id, a.number, a.site_id, a.state, a.cpus, a.gpus, a.gpu_model, a.offered_at) for a in attempts],
        "decisions": [(d.job_id, d.attempt, d.outcome, d.site, d.summary, d.verdicts, d.decided_at) for d in decisions],
        "explanations": [jobs.placement(session, ADMIN, j.id).explanation for j in job_rows],
    }


def _pass(url: str, bulk: bool) -> tuple[int, dict[str, Any]]:
    """One pass in a transaction that is rolled back, so both paths start from the same rows."""
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            placed = place_queued(s, None, NOW, bulk=bulk)
            s.flush()
            s.expire_all()
            out = _outcome(s)
            s.rollback()
        return placed, out
    finally:
        engine.dispose()


def test_bulk_pass_writes_what_the_orm_pass_wrote(db_url: str) -> None:
    seed(db_url, 500, 30, EXTRA)
    engine = make_engine(db_url)
    try:
        with transaction(engine) as s:  # one job refused at a site earlier: placed one by one, avoiding it
            refused = next(j for j in s.exec(select(Job).order_by(col(Job.id))) if j.spec["resources"]["cpus"] == 1)
            s.add(Attempt(id="old-attempt", job_id=refused.id, number=1, site_id=1, state="refused", offered_at=NOW))
            refused.attempt = 1
            s.add(refused)
    finally:
        engine.dispose()

    placed, bulk = _pass(db_url, bulk=True)
    placed_orm, orm = _pass(db_url, bulk=False)
    assert placed == placed_orm and bulk == orm
    outcomes = {d[2] for d in bulk["decisions"]}
    assert outcomes == {"placed", "waiting", "impossible"}, "the scenario covers every kind of decision"
    assert 0 < placed < 805 and len(bulk["attempts"]) == placed + 1
    again = next(a for a in bulk["attempts"] if a[0] == refused.id and a[1] == 2)
    assert again[2] != 1, "the job refused at site 1 went elsewhere"
    assert any(e.startswith("still queued — waiting: ") for e in bulk["explanations"])
    assert any(e.startswith("QUEUED at site-") and ": placed on site-" in e for e in bulk["explanations"])

    # A second pass after the first (committed) writes no decision for a job whose reasons did
    # not change (the impossible jobs), on either path.
    engine = make_engine(db_url)
    try:
        with transaction(engine) as s:
            place_queued(s, None, NOW)
    finally:
        engine.dispose()
    second, bulk2 = _pass(db_url, bulk=True)
    second_orm, orm2 = _pass(db_url, bulk=False)
    assert second == second_orm and bulk2 == orm2
    impossible = [d for d in bulk2["decisions"] if d[2] == "impossible"]
    assert len(impossible) == 5 and len(bulk2["decisions"]) > len(bulk["decisions"]), "waiting jobs' reasons changed"


def test_bulk_attempt_ids_are_what_uuid4_makes() -> None:
    """A pass's attempt ids are made without ``uuid.UUID`` (one per job placed): the same text
    ``uuid.UUID(bytes=..., version=4).hex`` gives for the same random bytes, variant and version bits set."""
    for raw in [bytes(16), b"\xff" * 16, *(os.urandom(16) for _ in range(200))]:
        made = uuid4_hex(raw)
        assert made == uuid.UUID(bytes=raw, version=4).hex
        assert uuid.UUID(made).version == 4 and uuid.UUID(made).variant == uuid.RFC_4122
