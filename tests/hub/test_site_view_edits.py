"""A registry change reloads only the site views it touched (hub/broker/cache.py, ``_edit``):
after each change the kept views are those a full reload gives, the views of the sites the
change did not touch are the very objects kept before, and the kept search board equals a
board built from freshly loaded views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
from sqlalchemy import ColumnElement, delete, update
from sqlmodel import Session, col, select

from bench.broker import NOW, seed
from hub.broker.cache import SiteViewCache
from hub.broker.search import Board
from hub.broker.service import decide_by_scan, decide_by_search
from hub.broker.views import load_views
from hub.datasets.models import Dataset, Replica
from hub.db import make_engine, transaction
from hub.estimates.models import RuntimeStat
from hub.jobs.models import SitePolicyRow
from hub.sites.models import Site, SoftwareRow
from hub.types import utcnow
from shared.schemas.jobs import JobSpec

SPEC = JobSpec.model_validate({"name": "j", "kind": "relion.refine3d", "command": ["x"], "resources": {"cpus": 64}})
ARRAYS = ("open", "reported", "cpus", "cpus_total", "slowdown", "gpu_site", "queue")


def _same_board(kept: Board, fresh: Board) -> None:
    assert [v.name for v in kept.views] == [v.name for v in fresh.views]
    assert kept.views == fresh.views
    for name in ARRAYS:
        assert np.array_equal(getattr(kept, name), getattr(fresh, name)), name
    assert kept.closed == fresh.closed
    assert (kept.windowed, kept.restricted, kept.holding) == (fresh.windowed, fresh.restricted, fresh.holding)
    assert (kept.index, kept.position, kept.measured_to) == (fresh.index, fresh.position, fresh.measured_to)
    for institution in ("inst-1", "inst-2", "elsewhere"):
        assert np.array_equal(kept.lends(institution), fresh.lends(institution)), institution


def test_a_registry_change_reloads_the_sites_it_touched_alone(db_url: str) -> None:
    seed(db_url, 0, 150)
    engine = make_engine(db_url)
    cache = SiteViewCache(max_age_s=3600)  # no re-read by age: only the changes below move the views
    later = iter(utcnow() + timedelta(minutes=m) for m in range(1, 100))  # edits are the newest
    edits = 0

    def after(change: Callable[[Session], object], touched: set[str], order_changes: bool = False) -> None:
        nonlocal edits
        with transaction(engine) as s, cache.views(s, NOW) as before:
            old_board = cache.board(NOW)
            kept = {v.name: v for v in before}
        with transaction(engine) as s:
            change(s)
        with transaction(engine) as s, cache.views(s, NOW) as views:
            board = cache.board(NOW)
            edits += 1
            assert (cache.reloads, cache.edits) == (1, edits), "no full reload"
            with transaction(engine, write=False) as r:
                fresh, _, _ = load_views(r, NOW)
            assert views == list(fresh.values()), "the kept views are what a full reload reads"
            assert {v.name for v in views if kept.get(v.name) is not v} == touched, "only those views were read again"
            fresh_board = Board(fresh.values(), NOW)
            _same_board(board, fresh_board)
            assert (board is old_board) != order_changes, "a new board when the sites' order changes"
            decided = decide_by_search(SPEC, "inst-1", views, NOW, cache.fixed, board)
            assert decided == decide_by_scan(SPEC, "inst-1", list(fresh.values()), NOW, set(), set())

    def where(name: str) -> ColumnElement[bool]:
        return col(Site.name) == name

    def site_id(s: Session, name: str) -> int:
        found = s.exec(select(Site.id).where(Site.name == name)).one()
        assert found is not None
        return found

    try:
        after(lambda s: s.execute(update(Site).where(where("site-0005")).values(institution="elsewhere", updated_at=next(later))),
              {"site-0005"})  # fmt: skip
        after(lambda s: s.execute(update(Site).where(where("site-0007")).values(status="suspended", updated_at=next(later))),
              {"site-0007"})  # fmt: skip
        after(lambda s: s.add(SitePolicyRow(site_id=site_id(s, "site-0000"), allowed_institutions=["inst-2"],
                                            updated_at=next(later))), {"site-0000"})  # fmt: skip
        after(lambda s: s.add(SoftwareRow(site_id=site_id(s, "site-0011"), name="cryosparc", version="4.4")), {"site-0011"})
        after(lambda s: s.execute(update(Site).where(where("site-0012")).values(reachability="unreachable")), set())

        def replicate(s: Session) -> None:
            s.add(Dataset(id="ds-1", owner_site_id=site_id(s, "site-0020"), institution="inst-1", title="d",
                          experiment_type="SPA", visibility="network", meta={}, checksum_algorithm="sha256",
                          manifest_digest="0" * 64, file_count=1, total_bytes=10**9, registered_by="t"))  # fmt: skip
            s.flush()
            s.add(Replica(dataset_id="ds-1", site_id=site_id(s, "site-0021"), state="AVAILABLE", location="s3://b/d"))

        after(replicate, set())  # a copy: the same view objects, their datasets updated in place
        after(lambda s: s.add(RuntimeStat(site_id=site_id(s, "site-0022"), kind="relion.refine3d", n=5, mean=-0.7,
                                          updated_at=next(later))), set())  # fmt: skip
        after(lambda s: s.execute(update(Site).where(where("site-0030")).values(name="aaa-first", updated_at=next(later))),
              {"aaa-first"}, order_changes=True)  # fmt: skip
        after(lambda s: s.execute(delete(Site).where(where("site-0040"))), set(), order_changes=True)
    finally:
        engine.dispose()
