"""The search board a hub process keeps between submissions (hub/broker/cache.py, ``Board.at``):
after each change to a site once the board was built (its capacity report, work placed there
and committed, a placement rolled back, work ended, a suspension, a new site), the next submission on
the kept board records exactly what scoring every freshly loaded view records. The network
has more sites than FULL_VERDICTS_UP_TO, so submissions take the search."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from bench.broker import NOW, seed
from hub.broker.cache import SiteViewCache
from hub.broker.service import decide_by_scan, decide_by_search, place_job, searchable
from hub.capacity.models import CapacityLatest
from hub.db import make_engine, transaction
from hub.jobs.models import Attempt, Job
from hub.sites.models import PartitionRow, Site, SoftwareRow
from shared.schemas.jobs import JobSpec

SPEC = JobSpec.model_validate({"name": "j", "kind": "relion.refine3d", "command": ["x"], "resources": {"cpus": 64}})
INSTITUTION = "inst-1"


def _job(s: Session) -> Job:
    job = Job(id=uuid.uuid4().hex, owner="t", institution=INSTITUTION, name="j", kind=SPEC.kind.value,
              spec=SPEC.model_dump(mode="json"), created_at=NOW, updated_at=NOW)  # fmt: skip
    s.add(job)
    s.flush()
    return job


def test_the_next_submission_sees_a_site_changed_after_the_board_was_built(db_url: str) -> None:
    seed(db_url, 0, 150)
    engine = make_engine(db_url)
    cache = SiteViewCache(max_age_s=3600)  # no reload by age: only the changes below move the board
    later = iter(NOW + timedelta(minutes=m) for m in range(1, 100))

    def submit(s: Session, place: bool = False) -> str | None:
        """Decide on the kept board, check it against a scan of fresh views, and place if asked."""
        with cache.views(s, NOW) as views:
            assert searchable(SPEC, views)
            board = cache.board(NOW)
            kept = decide_by_search(SPEC, INSTITUTION, views, NOW, cache.fixed, board)
            with transaction(engine, write=False) as fresh, SiteViewCache(max_age_s=0).views(fresh, NOW) as loaded:
                assert kept == decide_by_scan(SPEC, INSTITUTION, loaded, NOW, set(), set()), "the kept board is stale"
            if place:
                assert place_job(s, _job(s), views, NOW, None, board=board) is not None
            return kept.best.site if kept.best else None

    def site_id(name: str) -> int:
        return next(v.id for v in cache._views.values() if v.name == name)

    try:
        with transaction(engine) as s:
            first = submit(s)
            assert first is not None and cache.reloads == 1
        with transaction(engine) as s:  # its agent reports no CPU free
            full = {"cpus_total": 128, "cpus_free": 0, "gpus": {}, "jobs_pending": 0}
            at_first = col(CapacityLatest.site_id) == site_id(first)
            s.execute(update(CapacityLatest).where(at_first).values(totals=full, received_at=next(later)))
        with transaction(engine) as s:
            second = submit(s)
            assert second not in (None, first) and cache.reloads == 1, "a capacity report, read on its own"
        with transaction(engine) as s:  # work placed and committed: the site's room is counted again
            assert submit(s, place=True) == second
        for _ in range(20):  # more work there, until another site scores higher
            with transaction(engine) as s:
                if submit(s, place=True) != second:
                    break
        with Session(engine) as s:  # a placement rolled back holds nothing
            third = submit(s, place=True)
            s.rollback()
        assert third is not None
        with transaction(engine) as s:
            assert submit(s) == third
        with transaction(engine) as s:  # work that takes every CPU the second site lends
            hog = _job(s)
            s.add(Attempt(id=uuid.uuid4().hex, job_id=hog.id, number=1, site_id=site_id(second), offered_at=NOW, cpus=10**6))
        with transaction(engine) as s:
            assert submit(s) != second
        with transaction(engine) as s:  # the work placed at the second site ends: its room is back
            s.execute(update(Attempt).where(col(Attempt.site_id) == site_id(second)).values(state="ended", ended_at=NOW))
        with transaction(engine) as s:
            submit(s)
        with transaction(engine) as s:  # suspended
            s.execute(update(Site).where(col(Site.name) == third).values(status="suspended", updated_at=next(later)))
        with transaction(engine) as s:
            assert submit(s) not in (None, third) and (cache.reloads, cache.edits) == (1, 1), "that site's view alone"
        with transaction(engine) as s:  # a new site, idle and roomy, with no queue
            new = Site(id=1000, name="site-new", institution="inst-9", display_name="new", country="JP", status="active",
                       reachability="online", contacts=[], last_heartbeat_at=NOW, heartbeat_interval_s=86_400)  # fmt: skip
            s.add(new)
            s.flush()
            s.add(PartitionRow(site_id=1000, name="main", node_count=100, cores_per_node=128, memory_gb_per_node=512))
            s.add(SoftwareRow(site_id=1000, name="relion", version="5.0"))
            idle = {"cpus_total": 12_800, "cpus_free": 12_800, "gpus": {}, "jobs_pending": 0}
            s.add(CapacityLatest(site_id=1000, received_at=next(later), sampled_at=NOW, agent_version="b",
                                 backend="slurm", partitions=[], storage=[], totals=idle))  # fmt: skip
        with transaction(engine) as s:
            assert submit(s) == "site-new" and (cache.reloads, cache.edits) == (1, 2), "a new board of the kept views"
    finally:
        engine.dispose()
