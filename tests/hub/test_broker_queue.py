"""What a broker pass reads of the queue and writes back, row by row (hub/broker/queue.py,
hub/broker/writes.py): the jobs it takes, in order, when it may take only some; exactly one
decision per job and one attempt per placed job, nothing lost or written twice; one parsed
spec shared only by jobs alike in what the broker reads."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

from sqlmodel import Session, col, select

from bench.broker import NOW, seed
from hub.broker.service import place_queued
from hub.db import make_engine, transaction
from hub.jobs.models import Attempt, Job, PlacementRecord
from tests.hub.test_broker_bulk import EXTRA


def test_a_limited_pass_takes_the_highest_priority_then_oldest_jobs(db_url: str) -> None:
    seed(db_url, 60, 30)  # priorities 0-2, one creation time: ties go by id
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            order = [j.id for j in s.exec(select(Job).order_by(col(Job.priority).desc(), col(Job.created_at), col(Job.id)))]
            assert place_queued(s, None, NOW, limit=25) == 25
            s.flush()
            placed = {a.job_id for a in s.exec(select(Attempt))}
            decided = [d.job_id for d in s.exec(select(PlacementRecord).order_by(col(PlacementRecord.id)))]
            s.rollback()
    finally:
        engine.dispose()
    assert placed == set(order[:25])
    assert decided == order[:25], "placed, and so decided and written, in the queue's order"


def test_a_limited_pass_takes_the_oldest_jobs_first_to_the_microsecond(db_url: str) -> None:
    seed(db_url, 60, 30)
    engine = make_engine(db_url)
    try:
        with transaction(engine) as s:  # one priority; created seconds and microseconds apart, not in id order
            for k, job in enumerate(s.exec(select(Job).order_by(col(Job.id)))):
                job.priority, job.created_at = 1, NOW - timedelta(seconds=k % 7, microseconds=(k * 37_123) % 1_000_000)
                s.add(job)
        with Session(engine) as s:
            order = [j.id for j in s.exec(select(Job).order_by(col(Job.created_at), col(Job.id)))]
            assert place_queued(s, None, NOW, limit=25) == 25
            s.flush()
            decided = [d.job_id for d in s.exec(select(PlacementRecord).order_by(col(PlacementRecord.id)))]
            s.rollback()
    finally:
        engine.dispose()
    assert decided == order[:25]


def test_a_pass_writes_one_decision_per_job_and_one_attempt_per_placed_job(db_url: str) -> None:
    seed(db_url, 400, 30, EXTRA)
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            queued = {j.id: j.attempt for j in s.exec(select(Job))}
            placed = place_queued(s, None, NOW)
            s.flush()
            s.expire_all()
            jobs = {j.id: (j.attempt, j.site_id) for j in s.exec(select(Job))}
            attempts = [(a.job_id, a.number, a.site_id) for a in s.exec(select(Attempt))]
            decisions = [(d.job_id, d.outcome, d.verdicts) for d in s.exec(select(PlacementRecord))]
            s.rollback()
    finally:
        engine.dispose()
    assert Counter(job_id for job_id, _, _ in decisions) == Counter(list(queued)), "one decision for every queued job"
    assert len(attempts) == placed == sum(1 for _, outcome, _ in decisions if outcome == "placed")
    assert len({job_id for job_id, _, _ in attempts}) == len(attempts), "no job offered twice"
    for job_id, number, site_id in attempts:
        assert jobs[job_id] == (number, site_id) and number == queued[job_id] + 1
    waiting = [job_id for job_id, outcome, _ in decisions if outcome != "placed"]
    assert waiting and all(jobs[job_id] == (0, None) for job_id in waiting)
    # The verdicts, put together from parts shared between decisions, decode to whole lists of sites.
    for _, _, verdicts in decisions:
        assert isinstance(verdicts, list) and verdicts and all(isinstance(v, dict) and v["site"] for v in verdicts)
    shared = Counter(json.dumps(verdicts[1:]) for _, outcome, verdicts in decisions if outcome == "placed")
    assert shared.most_common(1)[0][1] > 1, "placed jobs of one kind share their ruled-out groups"
