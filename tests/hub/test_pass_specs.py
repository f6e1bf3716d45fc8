"""A broker pass parses each distinct spec once; jobs that differ only in what the broker
reads for estimates and limits (sizes, parameters, deadline, max_cost) must not share one,
or a job is placed and explained with another job's sizes."""

from __future__ import annotations

from sqlmodel import Session, select

from bench.broker import NOW, seed
from hub.broker.service import place_queued
from hub.db import make_engine
from hub.jobs.models import Job, PlacementRecord
from shared.schemas.jobs import JobSpec


def _class2d(particles: int) -> JobSpec:
    return JobSpec.model_validate({
        "name": "x", "kind": "relion.class2d", "command": ["x"], "resources": {"cpus": 4, "walltime_s": 30 * 86_400},
        "workload": {"particles": particles, "box_px": 128}, "parameters": {"K": 10},
    })  # fmt: skip


def test_each_job_is_placed_with_its_own_sizes(db_url: str) -> None:
    seed(db_url, 0, 20, extra=[(_class2d(1_000), "inst-1"), (_class2d(2_000_000), "inst-1")])
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            assert place_queued(s, None, NOW) == 2
            s.flush()
            summaries = {
                JobSpec.model_validate(job.spec).workload.particles: record.summary
                for job, record in s.exec(select(Job, PlacementRecord).where(Job.id == PlacementRecord.job_id))
            }
            s.rollback()
    finally:
        engine.dispose()
    assert "1,000 particles" in summaries[1_000], summaries[1_000]
    assert "2,000,000 particles" in summaries[2_000_000], summaries[2_000_000]
